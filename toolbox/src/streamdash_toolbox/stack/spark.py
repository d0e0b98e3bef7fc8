"""A Spark standalone cluster on 127.0.0.1: one master and N workers, each its own JVM, started with the installed
PySpark's own launcher (`pyspark/bin/spark-class`). Jobs reach it with `--master spark://127.0.0.1:<port>`; their
executors run in the workers' JVMs and their Python code in the workers' Python processes, as on Databricks.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from streamdash_toolbox.stack import process

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
WORKER_CORES = 1
WORKER_MEMORY = "1536m"  # one executor of Spark's default 1g heap plus its overhead


def submit_argv(script: Path, script_args: list[str], master: str = "local[2]", driver_memory: str = "2g",
                log_config: Path = Path("conf/log4j2.properties"), java_options: str = "",
                progress: Callable[[str], None] = print) -> list[str]:
    """spark-submit for one of the repository's jobs (`jobs/*.py`): the stack's jars (Spark's Kafka connector and
    Delta Lake), Delta turned on, no UI, the repository's log configuration. Run it with `PYSPARK_PYTHON` set."""
    from streamdash_toolbox.stack import install

    jars = ",".join(str(jar) for jar in install.spark_jars(progress))
    return [str(Path(sys.executable).parent / "spark-submit"), "--master", master, "--driver-memory", driver_memory,
            "--conf", "spark.ui.enabled=false", *install.spark_submit_conf(),
            "--driver-java-options", f"-Dlog4j2.configurationFile={log_config} {java_options}".strip(),
            "--jars", jars, str(script), *script_args]


def spark_class() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent / "bin" / "spark-class"


def worker_name(number: int) -> str:
    return f"spark_worker_{number}"


def service_names(workers: int) -> list[str]:
    """The stack's names (pid and log files) of a cluster's daemons."""
    return ["spark_master", *(worker_name(number) for number in range(1, workers + 1))] if workers else []


def start(stack_dir: Path, master_port: int, ui_port: int, workers: int, die_with_parent: bool) -> dict:
    """Start the master, then the workers; return once every worker has registered."""
    folder = stack_dir / "spark"
    folder.mkdir(parents=True, exist_ok=True)
    properties = folder / "spark-defaults.conf"  # also names the stack folder in each command line (pid checks)
    properties.write_text("spark.worker.cleanup.enabled true\nspark.ui.showConsoleProgress false\n")
    env = {"SPARK_LOCAL_IP": "127.0.0.1", "SPARK_LOG_DIR": str(folder / "logs")}
    url, ui_url = f"spark://127.0.0.1:{master_port}", f"http://127.0.0.1:{ui_port}"
    common = ["--host", "127.0.0.1", "--properties-file", str(properties)]
    pid_file, log_file = stack_dir / "run" / "spark_master.pid", stack_dir / "logs" / "spark_master.log"
    process.start([str(spark_class()), MASTER_CLASS, *common, "--port", str(master_port), "--webui-port",
                   str(ui_port)], pid_file, log_file, env, die_with_parent)
    process.wait_until(lambda: master_state(ui_url) is not None, pid_file, log_file, "the Spark master")
    for number in range(1, workers + 1):
        name = worker_name(number)
        process.start([str(spark_class()), WORKER_CLASS, *common, "--cores", str(WORKER_CORES), "--memory",
                       WORKER_MEMORY, "--work-dir", str(folder / name), "--webui-port", str(process.free_port()),
                       url], stack_dir / "run" / f"{name}.pid", stack_dir / "logs" / f"{name}.log", env,
                      die_with_parent)
    process.wait_until(lambda: (master_state(ui_url) or {}).get("aliveworkers", 0) >= workers, pid_file, log_file,
                       f"the Spark master with {workers} registered workers")
    return {"master_url": url, "ui_url": ui_url, "workers": workers, "work_dirs":
            [str(folder / worker_name(number)) for number in range(1, workers + 1)]}


def master_state(ui_url: str) -> dict | None:
    """The master's state as its web UI serves it (`/json/`): workers, applications, status; None if it is down."""
    try:
        with urllib.request.urlopen(f"{ui_url}/json/", timeout=2) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None

