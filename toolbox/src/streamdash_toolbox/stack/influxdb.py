"""InfluxDB 1.8 with authentication on, serving the 2.x write API (`/api/v2/write`) and InfluxQL (`/query`).

1.8 is the newest InfluxDB whose server builds with a plain `go install` from the Go module proxy; its
`/api/v2/write` takes `bucket=<database>/<retention policy>` and a token of the form `user:password`.
"""

from __future__ import annotations

import secrets
import urllib.error
import urllib.request
from pathlib import Path

from streamdash.influxql import query as influxql
from streamdash_toolbox.stack import install, process

ADMIN_USER = "streamdash"


def new_token() -> str:
    return f"{ADMIN_USER}:{secrets.token_urlsafe(24)}"


def config_file(folder: Path, http_port: int, rpc_port: int) -> str:
    return f"""\
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{folder / 'meta'}"

[data]
  dir = "{folder / 'data'}"
  wal-dir = "{folder / 'wal'}"
  query-log-enabled = false

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  auth-enabled = true
  log-enabled = false
  flux-enabled = false
  max-body-size = 0
"""


def start(stack_dir: Path, ports: dict[str, int], token: str, database: str, die_with_parent: bool) -> None:
    binary = install.influxd_binary()
    folder = stack_dir / "influxdb"
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "influxdb.conf"
    config.write_text(config_file(folder, ports["influxdb"], ports["influxdb_rpc"]))
    pid_file, log_file = stack_dir / "run" / "influxdb.pid", stack_dir / "logs" / "influxdb.log"
    url = f"http://127.0.0.1:{ports['influxdb']}"
    process.start([str(binary), "run", "-config", str(config)], pid_file, log_file, die_with_parent=die_with_parent)
    process.wait_until(lambda: _pings(url), pid_file, log_file, "InfluxDB", timeout_s=60)
    user, password = token.split(":", 1)
    # With auth on and no user yet, InfluxDB accepts exactly one statement without credentials: the admin.
    if influxql(url, "SHOW USERS", token=token, check=False).get("error"):
        influxql(url, f"CREATE USER {user} WITH PASSWORD '{password}' WITH ALL PRIVILEGES", token=None)
    influxql(url, f'CREATE DATABASE "{database}"', token=token)


def _pings(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
            return response.status == 204
    except (urllib.error.URLError, OSError):
        return False
