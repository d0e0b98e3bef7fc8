"""InfluxDB line protocol, built so that no input can produce a corrupt or ambiguous line.

Escaping: measurement `,` and space; tag keys, tag values and field keys `,` `=` and space; string field
values `"` and `\\`. A backslash elsewhere is stored literally by InfluxDB, but a backslash at the end of a
name or in front of `,` `=` or space cannot be told apart from an escape, and line protocol has no way to
carry control characters such as a newline in a name: such names raise `LineProtocolError` (the parser
dead-letters events whose identifiers match `events.UNREPRESENTABLE_IDENTIFIER`, so this never stops a
stream). An empty tag value is left out (line protocol cannot express it). Non-finite floats (NaN, inf) are
never written; integers keep the `i` suffix so a field's type never changes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from functools import lru_cache

from streamdash.events import UNREPRESENTABLE_IDENTIFIER

_UNREPRESENTABLE = re.compile(UNREPRESENTABLE_IDENTIFIER)
_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ "})
_KEY_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})


class LineProtocolError(ValueError):
    """A value cannot be written as line protocol without changing its meaning."""


def _checked(kind: str, text: str) -> str:
    if not text:
        raise LineProtocolError(f"empty {kind}")
    if _UNREPRESENTABLE.search(text):
        raise LineProtocolError(f"{kind} {text!r} has a control character or an ambiguous backslash")
    return text


def escape_measurement(name: str) -> str:
    return _checked("measurement", name).translate(_MEASUREMENT_ESCAPES)


def escape_key(key: str, kind: str = "tag key or field key") -> str:
    return _checked(kind, key).translate(_KEY_ESCAPES)


@lru_cache(maxsize=1 << 16)
def _escaped_name(kind: str, name: str) -> str:
    """`escape_key`, remembered: a batch repeats the same field keys, tag keys and most tag values on every line."""
    return escape_key(name, kind)


def format_field_value(value: object) -> str | None:
    """The field value's line-protocol form, or None for a value that must not be written (NaN, inf, None)."""
    if value.__class__ is float:  # the usual field first: a point has a float per statistic
        return repr(value) if value - value == 0 else None
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise LineProtocolError(f"unsupported field type {type(value).__name__}")


def line(measurement: str, tags: Mapping[str, str | None], fields: Mapping[str, object],
         timestamp_ns: int) -> str | None:
    """One point as line protocol; None when no field has a writable value."""
    field_parts = []
    for key in sorted(fields):
        formatted = format_field_value(fields[key])
        if formatted is not None:
            field_parts.append(f"{_escaped_name('field key', key)}={formatted}")
    if not field_parts:
        return None
    tag_parts = "".join(f",{_escaped_name('tag key', key)}={_escaped_name('tag value', value)}"
                        for key, value in sorted(tags.items()) if value not in (None, ""))
    return f"{escape_measurement(measurement)}{tag_parts} {','.join(field_parts)} {int(timestamp_ns)}"
