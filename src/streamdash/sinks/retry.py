"""The retry rules every HTTP sink follows: exponential backoff with jitter up to a cap, Retry-After honoured on
429 and 503, and a limit, either a number of retries (a view such as Grafana Live gives up early) or how long a
sink may stay unavailable (InfluxDB, the record, rides out an outage and only then fails the job)."""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass
from typing import Any

RETRY_AFTER_STATUSES = (429, 503)


def is_transient(status: int) -> bool:
    """A status worth retrying: the server is overloaded, restarting or failing, not refusing the request."""
    return status in RETRY_AFTER_STATUSES or status >= 500


@dataclass(frozen=True)
class RetryPolicy:
    initial_delay_s: float
    max_delay_s: float
    max_retries: int | None  # None: no limit on the count, only on `max_outage_s`
    max_outage_s: float | None = None  # None: no limit on the time, only on `max_retries`

    def delay(self, attempt: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait before attempt `attempt + 1`: Retry-After when the server gave one (capped)."""
        if retry_after_s is not None:
            return min(retry_after_s, self.max_delay_s)
        backoff = min(self.max_delay_s, self.initial_delay_s * 2 ** min(attempt, 30))
        return backoff * random.uniform(0.5, 1.0)

    def gives_up(self, retries_done: int, failing_for_s: float) -> bool:
        return ((self.max_retries is not None and retries_done >= self.max_retries)
                or (self.max_outage_s is not None and failing_for_s >= self.max_outage_s))


def retry_after_s(headers: Any) -> float | None:
    """Retry-After as seconds, from either of its forms (delta-seconds or an HTTP date)."""
    value = (headers or {}).get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None
