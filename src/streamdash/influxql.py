"""A small InfluxQL client (`POST /query`), for notebooks, dashboards checks and the local stack.

InfluxQL is the query language the dashboards use, because it works on InfluxDB 1.8, on 2.x through a DBRP
mapping and on 3.x. The token is sent as `Authorization: Token ...` and never appears in an error.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

from streamdash.config import redacted
from streamdash.errors import StreamdashError


class InfluxQLError(StreamdashError):
    """InfluxDB refused a statement or could not be reached."""


def query(url: str, statement: str, token: str | None, database: str | None = None, check: bool = True) -> dict:
    """POST one InfluxQL statement and return the decoded answer, with `error` set to the first error or None."""
    form = {"q": statement, "epoch": "ns"}
    if database:
        form["db"] = database
    request = urllib.request.Request(f"{url.rstrip('/')}/query", data=urllib.parse.urlencode(form).encode(),
                                     method="POST")
    if token:
        request.add_header("Authorization", f"Token {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as err:
        answer = json.loads(err.read() or b"{}") or {"error": f"HTTP {err.code}"}
    except (urllib.error.URLError, OSError) as err:
        raise InfluxQLError(f"InfluxDB at {redacted(url)} is unreachable: {err}") from None
    errors = [answer.get("error")] + [result.get("error") for result in answer.get("results", [])]
    errors = [error for error in errors if error]
    if errors and check:
        raise InfluxQLError(f"InfluxDB refused an InfluxQL statement: {errors[0]}")
    return {**answer, "error": errors[0] if errors else None}


def rows(answer: dict) -> list[dict]:
    """The first result's rows as dicts: `time` (ns), the series' tags and its columns, across every series."""
    found = []
    for series in answer["results"][0].get("series", []):
        tags = series.get("tags", {})
        for values in series["values"]:
            found.append({**tags, **dict(zip(series["columns"], values, strict=True))})
    return found
