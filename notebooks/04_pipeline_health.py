# Databricks notebook source
# MAGIC %md
# MAGIC # Pipeline health
# MAGIC The job's self-metrics in InfluxDB (`pipeline_progress`, `pipeline_writes`, `pipeline_deadletter`): per
# MAGIC query, the input and processed rates, batch duration, offsets behind latest, freshness, refused points and
# MAGIC time blocked on InfluxDB, and dead letters by reason;
# MAGIC then the streaming queries running on this cluster, if any.
# MAGIC
# MAGIC Widgets: as in 01, plus `since` (an InfluxQL duration such as 1h).

# COMMAND ----------

# The bundle syncs the repository next to this notebook: import streamdash from its src/ (on a job cluster,
# or locally, the installed wheel is found first either way).
import sys
from pathlib import Path

sys.path.append(str(Path.cwd().parent / "src"))

# COMMAND ----------

from streamdash import influxql
from streamdash.notebook import influx_database, influx_frame, settings_from_widgets

settings = settings_from_widgets(dbutils)
dbutils.widgets.text("since", "1h")
since = dbutils.widgets.get("since")
token, database = settings.influxdb.token.get_secret_value(), influx_database(settings)


def influx(statement):
    return influxql.rows(influxql.query(settings.influxdb.url, statement, token, database))


progress = influx(
    "SELECT last(input_rows_per_s) AS input_rows_per_s, last(processed_rows_per_s) AS processed_rows_per_s, "
    "mean(batch_duration_ms) AS mean_batch_ms, max(batch_duration_ms) AS max_batch_ms, "
    "last(offsets_behind_latest) AS offsets_behind, sum(rows_dropped_by_watermark) AS dropped_late "
    f"FROM pipeline_progress WHERE time > now() - {since} GROUP BY stream")
display(influx_frame(spark, progress) if progress else "no pipeline_progress points in that range")

# COMMAND ----------

writes = influx("SELECT last(freshness_ms) AS freshness_ms, max(freshness_ms) AS max_freshness_ms, "
                "sum(points_refused) AS points_refused, max(sink_blocked_ms) AS sink_blocked_ms "
                f"FROM pipeline_writes WHERE time > now() - {since} GROUP BY stream")
display(influx_frame(spark, writes) if writes else "no pipeline_writes points in that range")

# COMMAND ----------

dead = influx(f"SELECT sum(\"count\") AS dead_letters FROM pipeline_deadletter WHERE time > now() - {since} "
              "GROUP BY reason")
display(influx_frame(spark, dead) if dead else "no dead letters in that range")

# COMMAND ----------

for query in spark.streams.active:
    print(query.name, query.status["message"], query.lastProgress and query.lastProgress["batchId"])
print(f"{len(spark.streams.active)} streaming queries active on this cluster")
