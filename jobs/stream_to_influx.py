"""Entry point for spark-submit and for a Databricks spark_python_task; the logic lives in streamdash.job.

    streamdash job -- --env local

runs it under spark-submit with what it needs beside the script: Spark's Kafka connector and Delta Lake's jars,
and Delta's two session settings (without them a configured Delta table fails at its first write):

    spark-submit --jars "$(streamdash stack jars)" \
      --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension \
      --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog \
      jobs/stream_to_influx.py --env local
"""

import sys
from pathlib import Path

from streamdash.job import main

if __name__ == "__main__":
    main(sys.argv[1:], default_conf_dir=Path(__file__).resolve().parent.parent / "conf")
