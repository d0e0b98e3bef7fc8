"""Entry point of the backfill (spark-submit, a Databricks spark_python_task); the logic lives in streamdash.backfill.

    streamdash backfill --from 2026-12-01T00:00:00Z --to 2026-12-02T00:00:00Z -- --env local
"""

import sys
from pathlib import Path

from streamdash.backfill import main

if __name__ == "__main__":
    main(sys.argv[1:], default_conf_dir=Path(__file__).resolve().parent.parent / "conf")
