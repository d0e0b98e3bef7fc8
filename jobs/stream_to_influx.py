"""Entry point for spark-submit and for a Databricks spark_python_task; the logic lives in streamdash.job.

    spark-submit --jars "$(streamdash stack jars)" jobs/stream_to_influx.py --env local
"""

import sys
from pathlib import Path

from streamdash.job import main

if __name__ == "__main__":
    main(sys.argv[1:], default_conf_dir=Path(__file__).resolve().parent.parent / "conf")
