"""Install the local stack's servers and connector jars once, into a cache outside the repository.

Everything comes from package registries: the Kafka broker and Spark's Kafka connector from Maven
Central (through `mvn`), InfluxDB from the Go module proxy (through `go install`). A finished install
leaves a `.complete` marker, so later runs are offline and fast.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from streamdash.errors import StackError

KAFKA_VERSION = "4.1.1"
DELTA_VERSION = "4.3.1"  # Delta Lake's release for PySpark 4.0.1-4.1.1 (delta-spark on PyPI declares the range)
# What a session needs to read and write Delta tables and run MERGE (static: set when the session starts).
DELTA_SESSION_CONF = {"spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
                      "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog"}
INFLUXDB_MODULE = "github.com/influxdata/influxdb/cmd/influxd"
INFLUXDB_VERSION = "v1.8.10"
TELEGRAF_MODULE = "github.com/influxdata/telegraf/cmd/telegraf"
TELEGRAF_VERSION = "v1.39.3"
TELEGRAF_PLUGINS = ("inputs.kafka_consumer", "parsers.json_v2", "aggregators.basicstats", "aggregators.quantile",
                    "outputs.influxdb")
MAVEN_CENTRAL = "https://repo.maven.apache.org/maven2"


def cache_home() -> Path:
    """Where installs are cached; `STREAMDASH_HOME` moves it."""
    return Path(os.environ.get("STREAMDASH_HOME") or Path.home() / ".cache" / "streamdash")


def require_tool(name: str, purpose: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise StackError(f"`{name}` was not found on PATH; it is needed {purpose}. {hint}")
    return path


def require_java() -> str:
    return require_tool(
        "java", "to run Kafka and Spark", "Install a Java 17+ runtime (apt-get install openjdk-17-jre-headless)."
    )


def spark_version() -> str:
    import pyspark

    return pyspark.__version__


def kafka_broker_classpath(progress: Callable[[str], None] = print) -> Path:
    """The folder of jars that runs the Kafka broker (`java -cp '<dir>/*' kafka.Kafka ...`)."""
    target = cache_home() / f"kafka-{KAFKA_VERSION}" / "libs"
    _maven_copy_dependencies("kafka-broker.xml", {"kafka.version": KAFKA_VERSION}, target,
                             f"Apache Kafka {KAFKA_VERSION} broker", progress)
    return target


def spark_kafka_connector_jars(progress: Callable[[str], None] = print, version: str | None = None) -> list[Path]:
    """Jars to add to spark-submit for the Kafka source (at the installed PySpark's version unless `version` says
    otherwise), minus those PySpark already ships."""
    version = version or spark_version()
    target = cache_home() / f"spark-connectors-{version}"
    _maven_copy_dependencies("spark-connectors.xml", {"spark.version": version}, target,
                             f"Spark {version} Kafka connector", progress)
    return _not_shipped(target)


def delta_jars(progress: Callable[[str], None] = print) -> list[Path]:
    """Delta Lake's jars for spark-submit (`DELTA_SESSION_CONF` turns it on), minus those PySpark already ships."""
    target = cache_home() / f"delta-{DELTA_VERSION}"
    _maven_copy_dependencies("delta.xml", {"delta.version": DELTA_VERSION}, target, f"Delta Lake {DELTA_VERSION}",
                             progress)
    return _not_shipped(target)


def spark_jars(progress: Callable[[str], None] = print) -> list[Path]:
    """Every jar the job's spark-submit takes: the Kafka connector and Delta Lake."""
    return [*spark_kafka_connector_jars(progress), *delta_jars(progress)]


def spark_submit_conf() -> list[str]:
    """spark-submit's `--conf` arguments that turn Delta Lake on."""
    return [arg for key, value in DELTA_SESSION_CONF.items() for arg in ("--conf", f"{key}={value}")]


def _not_shipped(folder: Path) -> list[Path]:
    import pyspark

    shipped = {_artifact_name(jar.name) for jar in (Path(pyspark.__file__).parent / "jars").glob("*.jar")}
    return sorted(jar for jar in folder.glob("*.jar") if _artifact_name(jar.name) not in shipped)


def influxd_binary(progress: Callable[[str], None] = print) -> Path:
    """The `influxd` server binary, built with `go install` from the Go module proxy."""
    return _go_install(INFLUXDB_MODULE, INFLUXDB_VERSION, f"influxdb-{INFLUXDB_VERSION}", "influxd",
                       f"InfluxDB {INFLUXDB_VERSION}", (), progress, expected=INFLUXDB_GO_LINES)


def telegraf_binary(progress: Callable[[str], None] = print) -> Path:
    """Telegraf with only the plugins the side-by-side benchmark uses (a few minutes on the first run)."""
    return _go_install(TELEGRAF_MODULE, TELEGRAF_VERSION, f"telegraf-{TELEGRAF_VERSION}", "telegraf",
                       f"Telegraf {TELEGRAF_VERSION}", ("custom", *TELEGRAF_PLUGINS), progress,
                       expected=TELEGRAF_GO_LINES)


# What `go install -v` printed for each on a machine with an empty Go module cache (fewer with a warm one): the
# total its progress counts towards.
INFLUXDB_GO_LINES = 334
TELEGRAF_GO_LINES = 386


def _go_install(module: str, version: str, folder: str, binary_name: str, what: str, tags: tuple[str, ...],
                progress: Callable[[str], None], expected: int | None = None) -> Path:
    target = cache_home() / folder
    binary = target / "bin" / binary_name
    if (target / ".complete").exists() and binary.exists():
        return binary
    go = require_tool("go", f"to build {what} from the Go module proxy", "Install Go 1.21+ (https://go.dev/dl).")
    progress(f"installing {what} with go install (first run only, a minute or more)")
    env = {**os.environ, "CGO_ENABLED": "0", "GOBIN": str(target / "bin")}
    argv = [go, "install", "-v", *(["-tags", ",".join(tags)] if tags else []), f"{module}@{version}"]
    _run_with_progress(argv, env, target / "install.log", what, ("go: downloading", "github.com/", "golang.org/"),
                       progress, expected)
    if not binary.exists():
        raise StackError(f"go install finished but {binary} is missing; see {target / 'install.log'}")
    (target / ".complete").touch()
    return binary


def _artifact_name(jar_file_name: str) -> str:
    """`kafka-clients-3.9.1.jar` -> `kafka-clients`: the artifact without its version."""
    stem = jar_file_name.removesuffix(".jar")
    parts = stem.split("-")
    while parts and parts[-1][:1].isdigit():
        parts.pop()
    return "-".join(parts)


def _maven_copy_dependencies(pom_name: str, properties: dict[str, str], target: Path, what: str,
                             progress: Callable[[str], None]) -> None:
    if (target / ".complete").exists():
        return
    mvn = require_tool("mvn", f"to fetch the {what} from Maven Central",
                       "Install Maven (apt-get install maven).")
    require_java()
    progress(f"installing the {what} from Maven Central (first run only)")
    target.mkdir(parents=True, exist_ok=True)
    pom = target / "pom.xml"
    pom.write_text(resources.files("streamdash_toolbox.stack").joinpath("poms", pom_name).read_text())
    argv = [mvn, "-B", "-f", str(pom), "dependency:copy-dependencies", f"-DoutputDirectory={target}",
            "-DincludeScope=runtime", *(f"-D{key}={value}" for key, value in properties.items())]
    _run_with_progress(argv, dict(os.environ), target / "install.log", what, ("Downloaded from",), progress)
    (target / ".complete").touch()


def _run_with_progress(argv: list[str], env: dict[str, str], log_path: Path, what: str,
                       counted_prefixes: tuple[str, ...], progress: Callable[[str], None],
                       expected: int | None = None) -> None:
    """Run an installer, keep its full output in a log, and show a running count of what it fetched (of about
    `expected`, where that is known) and, at the end, the total and the time it took."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    of = f" of about {expected}" if expected else ""
    fetched = 0
    with log_path.open("w") as log, subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                    stdin=subprocess.DEVNULL, text=True, env=env) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if line.lstrip().startswith(counted_prefixes):
                fetched += 1
                if fetched % 25 == 0:
                    progress(f"  {what}: {fetched}{of} modules fetched or built")
        code = proc.wait()
    if code != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-8:])
        raise StackError(f"installing the {what} failed (exit {code}); is the package registry reachable? "
                         f"Full log: {log_path}\n{tail}")
    progress(f"  {what}: installed ({fetched} modules fetched or built in {time.monotonic() - started:.0f} s)")


def install_everything(telegraf: bool = False, progress: Callable[[str], None] = print) -> None:
    """Every server and jar the stack and the job use (and Telegraf, which only the benchmark compares against),
    each a visible step: `make run` and `make test` run this before anything else."""
    steps = [("Apache Kafka broker", kafka_broker_classpath), ("Spark's Kafka connector", spark_kafka_connector_jars),
             ("Delta Lake", delta_jars), ("InfluxDB server", influxd_binary),
             *([("Telegraf", telegraf_binary)] * telegraf)]
    started = time.monotonic()
    for number, (what, step) in enumerate(steps, start=1):
        progress(f"[{number}/{len(steps)}] {what}")
        where = step(progress)
        progress(f"[{number}/{len(steps)}] {what}: ready in {where if isinstance(where, Path) else cache_home()}")
    progress(f"all {len(steps)} installed in {time.monotonic() - started:.0f} s")
