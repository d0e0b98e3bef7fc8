"""Run a notebook of `notebooks/` outside Databricks, unchanged.

The notebooks are Databricks source files (`# Databricks notebook source`, cells separated by
`# COMMAND ----------`). On Databricks they find `spark`, `dbutils` and `display` as globals. `run()` provides the
same three names locally: a local SparkSession with the Kafka connector, a `dbutils` with `widgets` and `secrets`
(secrets from a configured workspace, see `Secrets`), and a `display` that prints a DataFrame
and keeps what it showed. `streamdash notebook <file>` runs one.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

from streamdash.errors import StreamdashError
from streamdash.session import PARSE_SETTINGS

HEADER = "# Databricks notebook source"
CELL_SEPARATOR = re.compile(r"^# COMMAND -+\s*$", re.MULTILINE)


class Widgets:
    """`dbutils.widgets`: text widgets whose values the caller sets (as a job's notebook parameters would)."""

    def __init__(self, values: dict[str, str]):
        self.values = dict(values)

    def text(self, name: str, default_value: str, label: str | None = None) -> None:
        self.values.setdefault(name, default_value)

    def get(self, name: str) -> str:
        if name not in self.values:
            raise StreamdashError(f"no widget named {name!r}; define it with dbutils.widgets.text first")
        return self.values[name]


class Secrets:
    """`dbutils.secrets.get` from a workspace that databricks-sdk finds configured (`~/.databrickscfg`,
    `DATABRICKS_HOST`...). Notebooks ask it only for a variable the environment lacks (`notebook.ScopeEnvironment`),
    so on the local stack, whose `streamdash stack env` sets them, never."""

    def get(self, scope: str, key: str) -> str:
        from databricks.sdk import WorkspaceClient

        return WorkspaceClient().dbutils.secrets.get(scope, key)


class LocalDbutils:
    def __init__(self, widgets: dict[str, str]):
        self.widgets = Widgets(widgets)
        self.secrets = Secrets()


class Display:
    """`display`: prints what it is given (a DataFrame's first rows) and keeps it in `shown`."""

    def __init__(self, rows: int = 20):
        self.rows = rows
        self.shown: list[Any] = []

    def __call__(self, value: Any, *args: Any, **kwargs: Any) -> None:
        from pyspark.sql import DataFrame

        self.shown.append(value)
        if isinstance(value, DataFrame):
            value.show(self.rows, truncate=60)
        else:
            print(value)


def local_spark():
    """A local SparkSession like a notebook's: UTC, the Kafka connector on the classpath, no UI, bound to loopback
    (where the stack runs; else Spark warns that the hostname resolves to loopback and picks another address)."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

    from streamdash_toolbox.stack import install

    jars = ",".join(str(jar) for jar in install.spark_jars())
    builder = (SparkSession.builder.master("local[2]").appName("streamdash-notebook").config("spark.jars", jars)
               .config("spark.ui.enabled", "false").config("spark.sql.session.timeZone", "UTC")
               .config("spark.sql.shuffle.partitions", "4"))
    for key, value in {**install.DELTA_SESSION_CONF, **PARSE_SETTINGS}.items():  # Delta tables, as on Databricks
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def cells(path: Path) -> list[str]:
    text = path.read_text()
    if not text.startswith(HEADER):
        raise StreamdashError(f"{path} is not a Databricks source notebook (first line must be {HEADER!r})")
    return [cell.strip("\n") for cell in CELL_SEPARATOR.split(text[len(HEADER):])]


def _summary(err: Exception) -> str:
    """One line: for a JVM error its root cause (py4j's own message only says which call failed)."""
    cause = getattr(err, "java_exception", None)
    if cause is not None:
        while cause.getCause() is not None:
            cause = cause.getCause()
        return f"{cause.getClass().getSimpleName()}: {cause.getMessage()}"[:300]
    return f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:300]}"


def run(path: Path, widgets: dict[str, str] | None = None, spark=None) -> dict[str, Any]:
    """Execute a notebook cell by cell in its own folder and return its globals (with `display.shown`).
    Markdown cells are printed; other magics (`%sql`, `%pip`, ...) are refused rather than skipped."""
    path = Path(path).resolve()
    namespace: dict[str, Any] = {"__name__": "__main__", "spark": spark or local_spark(),
                                 "dbutils": LocalDbutils(widgets or {}), "display": Display()}
    notebook_cells = cells(path)
    previous = Path.cwd()
    os.chdir(path.parent)
    try:
        for number, cell in enumerate(notebook_cells, start=1):
            print(f"--- {path.name} cell {number}/{len(notebook_cells)}", file=sys.stderr, flush=True)
            magic = [line.removeprefix("# MAGIC").strip() for line in cell.splitlines() if line.startswith("# MAGIC")]
            if magic:
                if not magic[0].startswith("%md"):
                    raise StreamdashError(f"{path.name} cell {number}: {magic[0].split()[0]} does not run locally")
                print("\n".join(magic).removeprefix("%md").strip())
                continue
            try:
                exec(compile(cell, f"{path.name}:cell{number}", "exec"), namespace)  # noqa: S102 - a notebook
            except Exception as err:
                raise StreamdashError(f"{path.name} cell {number} failed: {_summary(err)}") from err
    finally:
        os.chdir(previous)
    return namespace
