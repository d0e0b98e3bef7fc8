"""The retry rules every HTTP sink follows: bounded attempts, exponential backoff with jitter, Retry-After
honoured on 429 and 503, and no retry for any other 4xx (a request that was refused once is refused again)."""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass
from typing import Any

RETRY_AFTER_STATUSES = (429, 503)


def is_permanent(status: int) -> bool:
    return 400 <= status < 500 and status not in RETRY_AFTER_STATUSES


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5
    initial_delay_s: float = 0.5
    max_delay_s: float = 30.0

    def delay(self, attempt: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait before attempt `attempt + 1`: Retry-After when the server gave one (capped)."""
        if retry_after_s is not None:
            return min(retry_after_s, self.max_delay_s)
        backoff = min(self.max_delay_s, self.initial_delay_s * 2 ** attempt)
        return backoff * random.uniform(0.5, 1.0)


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
