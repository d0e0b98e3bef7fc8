"""Push the freshest windows to Grafana Live, so live panels update without polling InfluxDB.

`POST <grafana>/api/live/push/<stream_id>` with line protocol; Grafana publishes each measurement on the
channel `stream/<stream_id>/<measurement>`, which a panel reads through the built-in "-- Grafana --"
datasource. In update mode a micro-batch holds exactly the windows that changed, so each batch's lines
(of the configured measurements) are the freshest results.

Live is a view, InfluxDB is the record: pushes follow the HTTP sinks' retry rules (`sinks.retry`), and when
they run out, or Grafana refuses a push, the lines are dropped with a warning. A push never fails the stream.
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass

from streamdash.config import GrafanaLiveSink, default_of, redacted
from streamdash.sinks.report import WriteReport
from streamdash.sinks.retry import RETRY_AFTER_STATUSES, RetryPolicy, is_transient, retry_after_s

log = logging.getLogger(__name__)


def live_channel(stream_id: str, measurement: str) -> str:
    """The Grafana Live channel a pushed measurement appears on, as a panel names it."""
    return f"stream/{stream_id}/{measurement}"


@dataclass(frozen=True)
class GrafanaLivePusher:
    """Plain values, so Spark can ship it to the executors with the InfluxDB writer; its defaults are the
    configuration's (`config.GrafanaLiveSink`)."""

    url: str
    token: str
    stream_id: str
    measurements: tuple[str, ...]
    max_lines_per_push: int = default_of(GrafanaLiveSink, "max_lines_per_push")
    retry: RetryPolicy = RetryPolicy(default_of(GrafanaLiveSink, "retry_initial_delay_s"),
                                     default_of(GrafanaLiveSink, "retry_max_delay_s"),
                                     max_retries=default_of(GrafanaLiveSink, "max_retries"))
    timeout_s: float = default_of(GrafanaLiveSink, "timeout_s")

    @classmethod
    def from_config(cls, sink: GrafanaLiveSink) -> GrafanaLivePusher:
        return cls(url=sink.url.rstrip("/"), token=sink.token.get_secret_value(), stream_id=sink.stream_id,
                   measurements=tuple(sink.measurements), max_lines_per_push=sink.max_lines_per_push,
                   retry=RetryPolicy(sink.retry_initial_delay_s, sink.retry_max_delay_s, max_retries=sink.max_retries),
                   timeout_s=sink.timeout_s)

    def __repr__(self) -> str:  # never show the token
        return f"GrafanaLivePusher(url={redacted(self.url)!r}, stream_id={self.stream_id!r})"

    def channels(self) -> list[str]:
        return [live_channel(self.stream_id, measurement) for measurement in self.measurements]

    def write_lines(self, lines: Iterable[str | None]) -> WriteReport:
        """Push the lines of the configured measurements; reports how many Grafana took. Never raises, never
        blocks the stream for longer than its few retries: what Grafana does not take stays in InfluxDB only."""
        selected = [line for line in lines if line and line.split(",", 1)[0].split(" ", 1)[0] in self.measurements]
        pushed = 0
        for start in range(0, len(selected), self.max_lines_per_push):
            chunk = selected[start:start + self.max_lines_per_push]
            if self._push_with_retries("\n".join(chunk)):
                pushed += len(chunk)
        return WriteReport(written=pushed)

    def _push_with_retries(self, body: str) -> bool:
        problem = ""
        for attempt in range(self.retry.max_retries + 1):
            request = urllib.request.Request(f"{self.url}/api/live/push/{self.stream_id}", data=body.encode(),
                                             method="POST", headers={"Authorization": f"Bearer {self.token}",
                                                                     "Content-Type": "text/plain"})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s):
                    return True
            except urllib.error.HTTPError as err:
                problem = f"HTTP {err.code}"
                if not is_transient(err.code):
                    break
                delay = self.retry.delay(attempt, retry_after_s(err.headers) if err.code in RETRY_AFTER_STATUSES
                                         else None)
            except (urllib.error.URLError, OSError) as err:
                problem = f"{type(err).__name__}: {getattr(err, 'reason', err)!s:.200}"
                delay = self.retry.delay(attempt)
            if attempt < self.retry.max_retries:
                time.sleep(delay)
        log.warning("Grafana Live at %s did not take %d lines (%s); they stay in InfluxDB only",
                    redacted(self.url), body.count("\n") + 1, problem)
        return False
