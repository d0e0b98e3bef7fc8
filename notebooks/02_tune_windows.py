# Databricks notebook source
# MAGIC %md
# MAGIC # Tune windows and the watermark
# MAGIC How late events arrive (event time against the time the broker got them), how many a candidate
# MAGIC watermark would drop, and what candidate window sizes produce, all with the job's own transforms
# MAGIC (`deduplicate`, `windowed_aggregates`) on a batch read of the topic.
# MAGIC
# MAGIC Widgets: as in 01, plus `watermarks` and `window_sizes` (comma-separated candidates).

# COMMAND ----------

# The bundle syncs the repository next to this notebook: import streamdash from its src/ (on a job cluster,
# or locally, the installed wheel is found first either way).
import sys
from pathlib import Path

sys.path.append(str(Path.cwd().parent / "src"))

# COMMAND ----------

from pyspark.sql import Window
from pyspark.sql import functions as F

from streamdash.config import duration_seconds
from streamdash.notebook import settings_from_widgets
from streamdash.session import configure_parse
from streamdash.sources import kafka
from streamdash.transforms.aggregate import deduplicate, windowed_aggregates
from streamdash.transforms.parse import parse_events, valid_events

settings = settings_from_widgets(dbutils)
configure_parse(spark)  # how the parse reads a repeated key
dbutils.widgets.text("watermarks", "10 seconds, 30 seconds, 2 minutes")
dbutils.widgets.text("window_sizes", ", ".join(settings.aggregation.window_sizes))
source = settings.source.model_copy(update={"starting_offsets": "earliest"})
raw = kafka.read_batch(spark, source, headers=True)  # headers: a contract's fields may be there (IoT Hub)
parsed = parse_events(raw, settings.validation, settings.contract).cache()
events = valid_events(parsed)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Lateness
# MAGIC `delay_s` is how far behind the newest event time seen so far (by arrival order in its partition) an
# MAGIC event arrives: the quantity the watermark must cover.

# COMMAND ----------

arrivals = (parsed.where("error IS NULL")
            .withColumn("newest_so_far", F.max("event_time").over(
                Window.partitionBy("partition").orderBy("offset").rowsBetween(Window.unboundedPreceding, 0)))
            .withColumn("delay_s", F.col("newest_so_far").cast("double") - F.col("event_time").cast("double")))
lateness = arrivals.select(
    F.count(F.lit(1)).alias("events"),
    *[F.percentile_approx("delay_s", q).alias(f"p{int(q * 100)}_s") for q in (0.5, 0.95, 0.99)],
    F.max("delay_s").alias("max_s"))
display(lateness)

# COMMAND ----------

candidates = [w.strip() for w in dbutils.widgets.get("watermarks").split(",") if w.strip()]
dropped_by_watermark = spark.createDataFrame(
    [(w, arrivals.where(F.col("delay_s") > duration_seconds(w)).count()) for w in candidates],
    "watermark string, events_later_than_watermark long")
display(dropped_by_watermark)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Window sizes
# MAGIC Per candidate size: windows, and events per window per device (too few makes noisy statistics).

# COMMAND ----------

deduplicated = deduplicate(events, settings.aggregation.watermark, settings.contract.deduplication_key())
summaries = []
for size in [s.strip() for s in dbutils.widgets.get("window_sizes").split(",") if s.strip()]:
    aggregates = windowed_aggregates(deduplicated, [size], settings.aggregation.quantile_sketch_k, settings.contract)
    summaries.append(aggregates.where("level = 'device'").agg(
        F.lit(size).alias("window_size"), F.countDistinct("window_start_ns").alias("windows"),
        F.avg("count").alias("events_per_device_window"), F.min("count").alias("fewest")))
window_summary = summaries[0]
for summary in summaries[1:]:
    window_summary = window_summary.unionByName(summary)
display(window_summary)
