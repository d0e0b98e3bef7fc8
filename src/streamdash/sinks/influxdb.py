"""Write line protocol to InfluxDB's `/api/v2/write` from Spark executors: nothing dropped silently, nothing
that InfluxDB refuses can wedge the stream, and an outage is ridden out.

- batches of `batch_size` lines, `concurrent_writes` of them in flight at once, gzip at its fastest level (a
  third of the bytes for a fifth of the default level's CPU), nanosecond timestamps, synchronous writes (nothing
  buffered to lose);
- unavailable (connection errors, 5xx, 429/503 with Retry-After): back off up to `retry_max_delay_s` and keep
  trying for up to `max_outage`, logging every 30 s; past that `InfluxWriteError` fails the job with one line
  (the checkpoint replays the batch after a restart);
- refused (400 and 422: a field-type conflict, a point beyond retention, a bad line; 413: a body too large):
  the body is split in halves until the refused lines are isolated; those come back as rejected (the caller
  dead-letters them) and everything else is written. InfluxDB writes the good points of a partially refused
  body itself, and writing a point again overwrites it, so the split never doubles anything;
- 401, 403, 404 (credentials, bucket): the configuration is wrong, and no retry can help: fail at once.
"""

from __future__ import annotations

import gzip
import logging
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import reduce
from typing import Any

from streamdash.config import InfluxDBSink, default_of, duration_seconds, redacted
from streamdash.errors import StreamdashError
from streamdash.sinks.report import WriteReport
from streamdash.sinks.retry import RETRY_AFTER_STATUSES, RetryPolicy, is_transient, retry_after_s

log = logging.getLogger(__name__)
REFUSED_STATUSES = (400, 413, 422)  # InfluxDB refused (some of) the lines; other lines of the body may be fine


class InfluxWriteError(StreamdashError):
    """InfluxDB stayed unavailable for longer than allowed, or refused the credentials or the bucket."""


@dataclass(frozen=True)
class InfluxWriter:
    """Everything an executor needs to write; plain values so Spark can ship it to the workers. Built from the
    configuration (`from_config`); its defaults are the configuration's (`config.InfluxDBSink`)."""

    url: str
    org: str
    bucket: str
    token: str
    batch_size: int = default_of(InfluxDBSink, "batch_size")
    concurrent_writes: int = default_of(InfluxDBSink, "concurrent_writes")
    retry: RetryPolicy = RetryPolicy(default_of(InfluxDBSink, "retry_initial_delay_s"),
                                     default_of(InfluxDBSink, "retry_max_delay_s"), max_retries=None,
                                     max_outage_s=duration_seconds(default_of(InfluxDBSink, "max_outage")))
    timeout_s: float = default_of(InfluxDBSink, "timeout_s")
    outage_log_every_s: float = 30.0

    @classmethod
    def from_config(cls, sink: InfluxDBSink) -> InfluxWriter:
        return cls(url=sink.url, org=sink.org, bucket=sink.bucket, token=sink.token.get_secret_value(),
                   batch_size=sink.batch_size, concurrent_writes=sink.concurrent_writes, timeout_s=sink.timeout_s,
                   retry=RetryPolicy(sink.retry_initial_delay_s, sink.retry_max_delay_s, max_retries=None,
                                     max_outage_s=duration_seconds(sink.max_outage)))

    @property
    def where(self) -> str:
        """The URL for messages: without a user:password part."""
        return redacted(self.url)

    def __repr__(self) -> str:  # never show the token
        return f"InfluxWriter(url={self.where!r}, bucket={self.bucket!r})"

    def write_lines(self, lines: Iterable[str | None]) -> WriteReport:
        """Write every non-None line, `batch_size` at a time. Refused lines are in the report, not raised."""
        from influxdb_client import InfluxDBClient
        from influxdb_client.service.write_service import WriteService

        batches = _batches((line for line in lines if line is not None), self.batch_size)
        # The client's own gzip (enable_gzip) compresses at level 9; the body is compressed here instead.
        with InfluxDBClient(url=self.url, token=self.token, org=self.org,
                            timeout=int(self.timeout_s * 1000)) as client:
            service = WriteService(client.api_client)
            with ThreadPoolExecutor(self.concurrent_writes) as pool:
                reports = list(pool.map(lambda batch: self._write(service, batch, WriteReport()), batches))
        return reduce(WriteReport.merge, reports, WriteReport())

    def _write(self, service: Any, lines: list[str], report: WriteReport) -> WriteReport:
        refusal = self._post(service, "\n".join(lines), report)
        if refusal is None:
            report.written += len(lines)
        elif len(lines) == 1:
            report.rejected.append((lines[0], refusal))
        else:
            middle = len(lines) // 2
            self._write(service, lines[:middle], report)
            self._write(service, lines[middle:], report)
        return report

    def _post(self, service: Any, body: str, report: WriteReport) -> str | None:
        """None when InfluxDB took the body, its reason when it refused it; waits out an unavailable InfluxDB."""
        from influxdb_client.rest import ApiException
        from urllib3.exceptions import HTTPError as TransportError

        failing_since: float | None = None
        last_logged = float("-inf")
        retries = 0
        compressed = gzip.compress(body.encode(), compresslevel=1)
        try:
            while True:
                retry_after = None
                try:
                    service.post_write(org=self.org, bucket=self.bucket, body=compressed, precision="ns",
                                       content_encoding="gzip", content_type="text/plain; charset=utf-8")
                    return None
                except ApiException as err:
                    status = err.status or 0
                    problem = f"HTTP {status}: {(err.body or err.reason or '')!s:.300}"
                    if status in REFUSED_STATUSES:
                        return problem
                    if not is_transient(status):
                        raise InfluxWriteError(f"InfluxDB at {self.where} refused the write ({problem}); check "
                                               "influxdb.url, influxdb.bucket and influxdb.token") from None
                    if status in RETRY_AFTER_STATUSES:
                        retry_after = retry_after_s(err.headers)
                except (TransportError, OSError) as err:
                    problem = f"{type(err).__name__}: {err!s:.300}"
                now = time.monotonic()
                failing_since = now if failing_since is None else failing_since
                if self.retry.gives_up(retries, now - failing_since):
                    raise InfluxWriteError(
                        f"InfluxDB at {self.where} was unavailable for {now - failing_since:.0f} s, longer than "
                        f"influxdb.max_outage allows; last error: {problem}") from None
                if now - last_logged >= self.outage_log_every_s:
                    last_logged = now
                    log.warning("InfluxDB at %s unavailable for %.0f s (%s); retrying for up to %.0f s", self.where,
                                now - failing_since, problem, self.retry.max_outage_s or 0)
                time.sleep(self.retry.delay(retries, retry_after))
                retries += 1
        finally:
            if failing_since is not None:
                report.blocked_s += time.monotonic() - failing_since


def _batches(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in lines:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
