"""What the notebooks in `notebooks/` share with the job: its settings from their widgets, and InfluxDB rows as a
DataFrame. On Databricks the notebooks import it from the synced `src/`; locally the toolbox's notebook runtime
(`streamdash notebook <file>`) runs them with the same globals.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from streamdash.config import Settings, load_settings
from streamdash.errors import ConfigError

# The environment variables the job cluster fills from the secret scope (resources/streamdash.job.yml).
SECRET_ENVIRONMENT = {"EVENTHUBS_CONNECTION_STRING": "eventhubs-connection-string", "INFLUXDB_TOKEN": "influxdb-token"}


class ScopeEnvironment(Mapping[str, str]):
    """The process environment, and where it lacks a variable of `SECRET_ENVIRONMENT` (an interactive cluster has
    not the job cluster's), that secret from `scope`: the job's one route for secrets, taken by a notebook."""

    def __init__(self, dbutils: Any, scope: str):
        self.dbutils, self.scope = dbutils, scope

    def __getitem__(self, name: str) -> str:
        if name in os.environ or name not in SECRET_ENVIRONMENT:
            return os.environ[name]
        try:
            return self.dbutils.secrets.get(self.scope, SECRET_ENVIRONMENT[name])
        except Exception as err:  # noqa: BLE001 - any failure means the secret is unavailable here
            raise ConfigError(f"{name} is not set, and the secret {self.scope}/{SECRET_ENVIRONMENT[name]} is "
                              f"unavailable ({type(err).__name__}): set {name}") from None

    def __iter__(self) -> Iterator[str]:
        return iter({*os.environ, *SECRET_ENVIRONMENT})

    def __len__(self) -> int:
        return len({*os.environ, *SECRET_ENVIRONMENT})


def settings_from_widgets(dbutils: Any) -> Settings:
    """The job's configuration for a notebook, from three widgets:
    `env` (conf/<env>.toml), `overrides` (`section.field=value` pairs separated by `;`, as the job's `--set`)
    and `secret_scope`. A secret the job gets from its cluster's environment is read from the scope when the
    environment lacks it, as on an interactive cluster (`ScopeEnvironment`)."""
    for name, default in (("env", "dev"), ("overrides", ""), ("secret_scope", "streamdash")):
        dbutils.widgets.text(name, default)
    env = dbutils.widgets.get("env")
    conf_dir = Path.cwd().parent / "conf"  # notebooks run with their own folder as working directory
    overrides = [item.strip() for item in dbutils.widgets.get("overrides").split(";") if item.strip()]
    return load_settings(env, conf_dir, overrides, ScopeEnvironment(dbutils, dbutils.widgets.get("secret_scope")))


def influx_database(settings: Settings) -> str:
    """The InfluxQL database: `db` of a 1.8 `db/rp` bucket, or the bucket itself (2.x/3.x with a DBRP mapping)."""
    return settings.influxdb.bucket.split("/", 1)[0]


def influx_frame(spark: Any, rows: list[dict]):
    """InfluxQL rows -> a DataFrame to display: tags as strings, every field as double (InfluxDB mixes integer
    and float values in one column, which Spark's inference refuses to merge). `time` is dropped."""
    columns = sorted({key for row in rows for key in row} - {"time"})
    is_text = {c: any(isinstance(row.get(c), str) for row in rows) for c in columns}
    schema = ", ".join(f"`{c}` {'string' if is_text[c] else 'double'}" for c in columns)
    return spark.createDataFrame(
        [tuple(row.get(c) if is_text[c] or row.get(c) is None else float(row[c]) for c in columns) for row in rows],
        schema)
