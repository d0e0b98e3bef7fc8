# Databricks notebook source
# MAGIC %md
# MAGIC # The gold table beside InfluxDB
# MAGIC The same windows from the gold Delta table (`lakehouse.gold`: what Databricks SQL and Power BI read) and from
# MAGIC InfluxDB (what Grafana reads), side by side: every window in both, with the same count and statistic, but where
# MAGIC gold took an event too late for the dashboards' watermark (within `lakehouse.gold_lateness`): those differ.
# MAGIC
# MAGIC Widgets: as in 01, plus `window_size` and `level` (`site` or `device`).

# COMMAND ----------

# The bundle syncs the repository next to this notebook: import streamdash from its src/ (on a job cluster,
# or locally, the installed wheel is found first either way).
import sys
from pathlib import Path

sys.path.append(str(Path.cwd().parent / "src"))

# COMMAND ----------

from pyspark.sql import functions as F

from streamdash import influxql
from streamdash.config import window_label
from streamdash.notebook import influx_database, settings_from_widgets
from streamdash.sinks import delta

settings = settings_from_widgets(dbutils)
dbutils.widgets.text("window_size", settings.aggregation.window_sizes[0])
dbutils.widgets.text("level", "site")  # site or device
window, level = window_label(dbutils.widgets.get("window_size")), dbutils.widgets.get("level")
if not settings.lakehouse.gold:
    raise ValueError("set lakehouse.gold (the overrides widget: lakehouse.gold=<table or path>)")
field = settings.contract.stat_columns()[0]  # the first measurement's first statistic (temperature_mean by default)
gold = (delta.read(spark, settings.lakehouse.gold).where((F.col("level") == level) & (F.col("window") == window))
        .select("site", F.coalesce("device_id", F.lit("")).alias("device"),
                (F.unix_micros("window_start") * 1000).alias("window_start_ns"), "count", field))
print(f"{gold.count()} {level} windows of {window} in {settings.lakehouse.gold}")
display(gold.orderBy("window_start_ns", "site", "device"))

# COMMAND ----------

measurement = "telemetry_site" if level == "site" else "telemetry_device"
statement = (f"SELECT \"count\", \"{field}\" FROM {measurement} WHERE \"window\" = '{window}' "
             "GROUP BY site" + (", device" if level == "device" else ""))
rows = influxql.rows(influxql.query(settings.influxdb.url, statement, settings.influxdb.token.get_secret_value(),
                                    influx_database(settings)))
landed = spark.createDataFrame([(r["site"], r.get("device", ""), r["time"], r["count"], r[field]) for r in rows],
                               f"site string, device string, window_start_ns long, count long, {field} double")
side_by_side = (gold.alias("g").join(landed.alias("i"), ["site", "device", "window_start_ns"], "full_outer")
                .select("site", "device", "window_start_ns", F.col("g.count").alias("gold_count"),
                        F.col("i.count").alias("influx_count"), F.col(f"g.{field}").alias(f"gold_{field}"),
                        F.col(f"i.{field}").alias(f"influx_{field}")))
differences = side_by_side.where(
    f"gold_count IS NULL OR influx_count IS NULL OR gold_count != influx_count "
    f"OR (gold_{field} IS NULL) != (influx_{field} IS NULL) "
    f"OR abs(gold_{field} - influx_{field}) > 1e-9 * greatest(1, abs(influx_{field}))")  # sums in another order
print(f"{side_by_side.count()} windows side by side, {differences.count()} differ")
display(side_by_side.orderBy("window_start_ns", "site", "device"))
