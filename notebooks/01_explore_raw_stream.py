# Databricks notebook source
# MAGIC %md
# MAGIC # Explore the raw stream
# MAGIC What is on the topic right now: raw records, the schema the job parses them into, and the records it
# MAGIC would dead-letter, with their reasons. It reads a batch (earliest to latest offsets) with the job's own
# MAGIC source and parser, so what you see is what the job sees.
# MAGIC
# MAGIC Widgets: `env` (conf/<env>.toml), `overrides` (`section.field=value;...`, as the job's `--set`),
# MAGIC `secret_scope`.

# COMMAND ----------

# The bundle syncs the repository next to this notebook: import streamdash from its src/ (on a job cluster,
# or locally, the installed wheel is found first either way).
import sys
from pathlib import Path

sys.path.append(str(Path.cwd().parent / "src"))

# COMMAND ----------

from pyspark.sql import functions as F

from streamdash.notebook import settings_from_widgets
from streamdash.session import configure_parse
from streamdash.sources import kafka
from streamdash.transforms.parse import dead_letters, parse_events, valid_events

settings = settings_from_widgets(dbutils)
configure_parse(spark)  # how the parse reads a repeated key
source = settings.source.model_copy(update={"starting_offsets": "earliest"})
raw = kafka.read_batch(spark, source, headers=True).cache()
print(f"{raw.count()} records on {source.topic}")
display(raw.select("partition", "offset", "kafka_timestamp", F.col("value").cast("string").alias("value"),
                   F.transform("headers", lambda h: h["key"]).alias("headers")).limit(20))

# COMMAND ----------

# MAGIC %md
# MAGIC ## Parsed events
# MAGIC The typed columns every valid event gets, and records per partition.

# COMMAND ----------

parsed = parse_events(raw, settings.validation, settings.contract).cache()
events = valid_events(parsed)
events.printSchema()
display(events.orderBy("event_time").limit(20))
display(parsed.groupBy("partition").agg(F.count(F.lit(1)).alias("records"), F.min("offset"), F.max("offset")))

# COMMAND ----------

# MAGIC %md
# MAGIC ## Bad records
# MAGIC What the job sends to the dead-letter sink, counted by reason, and a sample of each.

# COMMAND ----------

bad = dead_letters(parsed)
bad_by_reason = bad.groupBy("reason").count().orderBy("reason")
display(bad_by_reason)
display(bad.select("reason", "partition", "offset", F.substring("payload", 1, 120).alias("payload")).limit(20))
