# Databricks notebook source
# MAGIC %md
# MAGIC # What landed in InfluxDB, against the stream
# MAGIC Reads the site-level windows from InfluxDB (InfluxQL, as the dashboards do) and recomputes the same
# MAGIC windows from the topic with the job's transforms. Closed windows should match exactly; windows still
# MAGIC open, or events the running job dropped as too late, show up as differences.
# MAGIC
# MAGIC Widgets: as in 01, plus `window_size`.

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
from streamdash.sources import kafka
from streamdash.transforms.aggregate import deduplicate, windowed_aggregates
from streamdash.transforms.parse import parse_events, valid_events

settings = settings_from_widgets(dbutils)
dbutils.widgets.text("window_size", settings.aggregation.window_sizes[0])
window_size = dbutils.widgets.get("window_size")
field = settings.contract.stat_columns()[0]  # the first measurement's first statistic (temperature_mean by default)
statement = (f"SELECT \"count\", \"{field}\" FROM telemetry_site WHERE \"window\" = '{window_label(window_size)}' "
             "GROUP BY site")
rows = influxql.rows(influxql.query(settings.influxdb.url, statement, settings.influxdb.token.get_secret_value(),
                                    influx_database(settings)))
print(f"{len(rows)} site windows of {window_size} in InfluxDB")
landed = spark.createDataFrame(
    [(r["site"], r["time"], r["count"], r[field]) for r in rows],
    f"site string, window_start_ns long, count long, {field} double")
display(landed.orderBy("window_start_ns", "site"))

# COMMAND ----------

source = settings.source.model_copy(update={"starting_offsets": "earliest"})
raw = kafka.read_batch(spark, source, headers=True)  # headers: a contract's fields may be there (IoT Hub)
events = valid_events(parse_events(raw, settings.validation, settings.contract))
deduplicated = deduplicate(events, settings.aggregation.watermark, settings.contract.deduplication_key())
aggregates = windowed_aggregates(deduplicated, [window_size], settings.aggregation.quantile_sketch_k,
                                 settings.contract)
from_stream = (aggregates.where("level = 'site'").select("site", "window_start_ns", "count", field))
comparison = (from_stream.alias("s").join(landed.alias("i"), ["site", "window_start_ns"], "full_outer")
              .select("site", "window_start_ns", F.col("s.count").alias("stream_count"),
                      F.col("i.count").alias("influx_count"),
                      (F.col(f"s.{field}") - F.col(f"i.{field}")).alias("difference")))
mismatches = comparison.where(
    "stream_count IS NULL OR influx_count IS NULL OR stream_count != influx_count OR abs(difference) > 1e-9")
print(f"{comparison.count()} windows compared, {mismatches.count()} differ")
display(mismatches.orderBy("window_start_ns", "site"))
