"""What the tests and the benchmarks share: the repository, the stack's InfluxDB as InfluxQL rows, literal Kafka
records, the job's launcher and the ground truth it is checked against. For a source checkout of streamdash only
(it reads the repository's files); the job never imports it.

- `records`: literal Kafka records (`raw`) of the simulator's payload (`GOOD`, `with_`), for transforms' tests;
- `pipeline`: the job under spark-submit (`Job`, `job_args`), the simulator, waits on what InfluxDB holds;
- `ground_truth`: the windows computed independently from the simulator's manifest;
- `bundle`: databricks.yml resolved for a target, as the Databricks CLI does;
- `http_servers`: an HTTP server that fails on demand (InfluxDB and Grafana Live outages).
"""

from __future__ import annotations

import uuid
from pathlib import Path

from streamdash import influxql

REPO = Path(__file__).resolve().parents[4]  # toolbox/src/streamdash_toolbox/testing -> the repository
if not (REPO / "databricks.yml").is_file():
    raise ImportError(f"streamdash_toolbox.testing needs a source checkout of streamdash; {REPO} is not one")
# A stack of free ports, so tests and benchmarks never meet a `make run` stack on the default ones.
FREE_PORTS = {"kafka": 0, "kafka_sasl": 0, "kafka_controller": 0, "influxdb": 0, "influxdb_rpc": 0}


class Influx:
    """InfluxQL against a stack's InfluxDB."""

    def __init__(self, stack):
        self.url = stack.info["influxdb"]["url"]
        self.database = stack.info["influxdb"]["database"]
        self.bucket = stack.info["influxdb"]["bucket"]
        self.token = stack.secrets["influxdb_token"]

    def query(self, statement: str, database: str | None = None) -> list[dict]:
        """Rows as dicts (time in ns, tags included) across every series of the first result."""
        return influxql.rows(influxql.query(self.url, statement, self.token, database or self.database))

    def create_database(self, prefix: str) -> str:
        """A new database of its own, so a test sees only the points it wrote."""
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        influxql.query(self.url, f'CREATE DATABASE "{name}"', self.token)
        return name
