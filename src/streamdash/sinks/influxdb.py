"""Write line protocol to InfluxDB's `/api/v2/write` from Spark executors, with bounded, honest retries.

- batches of `batch_size` lines, gzip, nanosecond timestamps, synchronous writes (nothing buffered to lose);
- 429 and 503 wait for Retry-After (capped), other 5xx and connection errors back off exponentially with
  jitter, other 4xx fail at once (retrying a bad request never helps);
- when retries run out, `InfluxWriteError` fails the Spark task, so the micro-batch fails and is replayed
  from the checkpoint: nothing is dropped silently. Replays overwrite, because a point's identity
  (measurement, tags, timestamp) is a pure function of the data.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from streamdash.config import InfluxDBSink
from streamdash.errors import StreamdashError
from streamdash.sinks.grafana_live import GrafanaLivePusher
from streamdash.sinks.retry import RETRY_AFTER_STATUSES, RetryPolicy, is_permanent, retry_after_s


class InfluxWriteError(StreamdashError):
    """InfluxDB did not take a batch (refused it, or retries ran out)."""


@dataclass(frozen=True)
class InfluxWriter:
    """Everything an executor needs to write; plain values so Spark can ship it to the workers."""

    url: str
    org: str
    bucket: str
    token: str
    batch_size: int = 5000
    max_retries: int = 5
    retry_initial_delay_s: float = 0.5
    retry_max_delay_s: float = 30.0
    timeout_s: float = 30.0

    @classmethod
    def from_config(cls, sink: InfluxDBSink) -> InfluxWriter:
        return cls(url=sink.url, org=sink.org, bucket=sink.bucket, token=sink.token.get_secret_value(),
                   batch_size=sink.batch_size, max_retries=sink.max_retries,
                   retry_initial_delay_s=sink.retry_initial_delay_s, retry_max_delay_s=sink.retry_max_delay_s,
                   timeout_s=sink.timeout_s)

    def __repr__(self) -> str:  # never show the token
        return f"InfluxWriter(url={self.url!r}, bucket={self.bucket!r})"

    def write_lines(self, lines: Iterable[str | None]) -> int:
        """Write every non-None line, `batch_size` at a time; returns how many lines were written."""
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        written = 0
        with InfluxDBClient(url=self.url, token=self.token, org=self.org, timeout=int(self.timeout_s * 1000),
                            enable_gzip=True) as client:
            api = client.write_api(write_options=SYNCHRONOUS)
            for batch in _batches((line for line in lines if line is not None), self.batch_size):
                self._write_with_retries(api, "\n".join(batch))
                written += len(batch)
        return written

    def _write_with_retries(self, api: Any, body: str) -> None:
        from influxdb_client.client.write_api import WritePrecision
        from influxdb_client.rest import ApiException
        from urllib3.exceptions import HTTPError as TransportError

        for attempt in range(self.max_retries + 1):
            try:
                api.write(bucket=self.bucket, org=self.org, record=body, write_precision=WritePrecision.NS)
                return
            except ApiException as err:
                status = err.status or 0
                problem = f"HTTP {status}: {(err.body or err.reason or '')!s:.300}"
                if is_permanent(status):
                    raise InfluxWriteError(f"InfluxDB at {self.url} refused a batch ({problem})") from None
                delay = self._retry.delay(attempt, retry_after_s(err.headers) if status in RETRY_AFTER_STATUSES
                                          else None)
            except (TransportError, OSError) as err:
                problem = f"{type(err).__name__}: {err!s:.300}"
                delay = self._retry.delay(attempt)
            if attempt < self.max_retries:
                time.sleep(delay)
        raise InfluxWriteError(f"InfluxDB at {self.url} did not take a batch after {self.max_retries + 1} "
                               f"attempts; last error {problem}")

    @property
    def _retry(self) -> RetryPolicy:
        return RetryPolicy(self.max_retries, self.retry_initial_delay_s, self.retry_max_delay_s)


def _batches(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in lines:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def write_partition(writer: InfluxWriter, to_line: Callable[[dict], str | None], live: GrafanaLivePusher | None,
                    rows: Iterable[Any]) -> None:
    """`foreachPartition` body: rows -> line protocol -> InfluxDB (then Grafana Live, if configured), on the
    executor that holds them."""
    if live is None:
        writer.write_lines(to_line(row.asDict()) for row in rows)
        return
    lines = [to_line(row.asDict()) for row in rows]
    writer.write_lines(lines)
    live.push(lines)


def foreach_batch(writer: InfluxWriter, to_line: Callable[[dict], str | None],
                  live: GrafanaLivePusher | None = None) -> Callable[[Any, int], None]:
    """A foreachBatch handler that writes every row of the micro-batch from the executors."""

    def write_batch(batch: Any, batch_id: int) -> None:
        batch.foreachPartition(partial(write_partition, writer, to_line, live))

    return write_batch
