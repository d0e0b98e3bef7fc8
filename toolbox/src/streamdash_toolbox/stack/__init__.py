"""The local stack: real Kafka (with an Event Hubs-style listener) and InfluxDB on 127.0.0.1, and on request a
Spark standalone cluster (a master and N workers).

`Stack(dir).up()` installs what is missing (cached in `$STREAMDASH_HOME`, default `~/.cache/streamdash`), starts
each server, waits for it to be healthy and records its endpoints in `<dir>/stack.json`; secrets go to
`<dir>/secrets.json` (0600). `up` on a running stack changes nothing (but adds a Spark cluster if asked for one);
`down` stops every process it started, by the pid it recorded.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from streamdash.errors import StackError
from streamdash_toolbox.stack import influxdb, install, kafka, process, spark, tls

SERVER_PORTS = {"kafka": 9092, "kafka_sasl": 9093, "kafka_controller": 9094, "influxdb": 8086, "influxdb_rpc": 8088}
SPARK_PORTS = {"spark_master": 7077, "spark_master_ui": 8080}  # chosen when a Spark cluster is asked for
DEFAULT_PORTS = {**SERVER_PORTS, **SPARK_PORTS}
SERVICES = ("kafka", "influxdb")
EVENTHUBS_NAMESPACE = "streamdash-local"
DEFAULT_TOPIC = "telemetry"
DATABASE = "streamdash"


def default_dir() -> Path:
    return Path(os.environ.get("STREAMDASH_STACK_DIR") or install.cache_home() / "stack")


class Stack:
    def __init__(self, directory: Path | None = None, ports: dict[str, int] | None = None,
                 die_with_parent: bool = False, progress: Callable[[str], None] = print):
        """`ports` maps a service port name to a number; 0 picks a free port. Missing names use the defaults."""
        self.dir = Path(directory or default_dir()).resolve()
        self.requested_ports = {**DEFAULT_PORTS, **(ports or {})}
        self.die_with_parent = die_with_parent
        self.progress = progress

    # ---- what the stack offers to clients -------------------------------------------------------------
    @property
    def info(self) -> dict:
        try:
            return json.loads((self.dir / "stack.json").read_text())
        except FileNotFoundError:
            raise StackError(f"no local stack in {self.dir}; start it with `streamdash stack up`") from None

    @property
    def secrets(self) -> dict[str, str]:
        return json.loads((self.dir / "secrets.json").read_text())

    def env(self) -> dict[str, str]:
        """Environment variables that point the pipeline and the simulator at this stack (secrets included)."""
        info, secret = self.info, self.secrets
        cluster = {"STREAMDASH_SPARK_MASTER": info["spark"]["master_url"]} if "spark" in info else {}
        return {
            "STREAMDASH_KAFKA_BOOTSTRAP": info["kafka"]["bootstrap_servers"],
            "STREAMDASH_EVENTHUBS_BOOTSTRAP": info["kafka"]["eventhubs_bootstrap_servers"],
            "STREAMDASH_KAFKA_CA_FILE": info["kafka"]["ca_file"],
            "STREAMDASH_INFLUXDB_URL": info["influxdb"]["url"],
            "EVENTHUBS_CONNECTION_STRING": secret["eventhubs_connection_string"],
            "INFLUXDB_TOKEN": secret["influxdb_token"],
            **cluster,
        }

    # ---- lifecycle --------------------------------------------------------------------------------------
    def up(self, spark_workers: int = 0) -> dict:
        """Start the servers (unless they all run) and, with `spark_workers`, a Spark cluster of that many workers."""
        self.dir.mkdir(parents=True, exist_ok=True)
        running = self.running()
        if not all(running[name] for name in SERVICES):
            self.down()
            self._start_servers()
        if spark_workers and not (self.info.get("spark", {}).get("workers") == spark_workers and all(running.values())):
            self._start_spark(spark_workers)
        return self.info

    def _start_servers(self) -> None:
        ports = self._choose_ports()
        self._secrets()  # created before the servers start: they are configured with them
        ca_file, _ = tls.ensure_certificates(self.dir / "tls")
        info = {
            "dir": str(self.dir),
            "ports": ports,
            "kafka": {
                "bootstrap_servers": f"127.0.0.1:{ports['kafka']}",
                "eventhubs_bootstrap_servers": f"127.0.0.1:{ports['kafka_sasl']}",
                "ca_file": str(ca_file),
                "eventhubs_namespace": EVENTHUBS_NAMESPACE,
                "default_topic": DEFAULT_TOPIC,
            },
            "influxdb": {"url": f"http://127.0.0.1:{ports['influxdb']}", "database": DATABASE,
                         "bucket": f"{DATABASE}/autogen", "org": "streamdash"},
        }
        (self.dir / "stack.json").write_text(json.dumps(info, indent=2))
        try:
            for name in SERVICES:
                self.start_service(name)
            create_topic(info["kafka"]["bootstrap_servers"], DEFAULT_TOPIC, partitions=4, append_time=True)
        except BaseException:
            self.down()
            raise

    def _start_spark(self, workers: int) -> None:
        for name in self._spark_services():
            process.stop(self._pid_file(name))
        ports = {name: self.requested_ports[name] or process.free_port() for name in SPARK_PORTS}
        for name, port in ports.items():
            process.check_port_free(port, f"{name} ({self.dir})")
        self.progress(f"starting a Spark cluster: master on 127.0.0.1:{ports['spark_master']}, {workers} workers")
        info = self.info
        try:
            info["spark"] = spark.start(self.dir, ports["spark_master"], ports["spark_master_ui"], workers,
                                        self.die_with_parent)
        except BaseException:
            for name in spark.service_names(workers):
                process.stop(self._pid_file(name))
            raise
        (self.dir / "stack.json").write_text(json.dumps(info, indent=2))

    def down(self) -> list[str]:
        """Stop every process of this stack (servers and Spark cluster); returns the names of those that ran."""
        stopped = [name for name in (*self._spark_services(), *SERVICES) if process.stop(self._pid_file(name))]
        info = self._info_or_empty()
        if info.pop("spark", None):
            (self.dir / "stack.json").write_text(json.dumps(info, indent=2))
        return stopped

    def start_service(self, name: str) -> None:
        """Start one server of this stack on its recorded ports, with its data as it was left."""
        ports, secret = self.info["ports"], self.secrets
        if name == "kafka":
            self.progress(f"starting Kafka on 127.0.0.1:{ports['kafka']} (PLAINTEXT) "
                          f"and 127.0.0.1:{ports['kafka_sasl']} (SASL_SSL, Event Hubs-style)")
            _, keystore = tls.ensure_certificates(self.dir / "tls")
            kafka.start(self.dir, ports, secret["eventhubs_connection_string"], keystore, self.die_with_parent)
        else:
            self.progress(f"starting InfluxDB on 127.0.0.1:{ports['influxdb']}")
            influxdb.start(self.dir, ports, secret["influxdb_token"], DATABASE, self.die_with_parent)

    def stop_service(self, name: str) -> bool:
        """Stop one server (an outage); its data stays for `start_service`. True if it was running."""
        return process.stop(self._pid_file(name))

    def pid(self, name: str) -> int | None:
        """The process id of one of the stack's servers, if it runs."""
        return process.read_pid(self._pid_file(name))

    def running(self) -> dict[str, bool]:
        return {name: self.pid(name) is not None for name in (*SERVICES, *self._spark_services())}

    def log_files(self) -> dict[str, Path]:
        return {name: self.dir / "logs" / f"{name}.log" for name in (*SERVICES, *self._spark_services())}

    # ---- internals --------------------------------------------------------------------------------------
    def _info_or_empty(self) -> dict:
        try:
            return self.info
        except StackError:
            return {}

    def _spark_services(self) -> list[str]:
        return spark.service_names(self._info_or_empty().get("spark", {}).get("workers", 0))

    def _pid_file(self, name: str) -> Path:
        return self.dir / "run" / f"{name}.pid"

    def _choose_ports(self) -> dict[str, int]:
        """Keep the ports of an earlier run of this stack (clients' config points there), else as requested."""
        try:
            previous = self.info["ports"]
        except StackError:
            previous = {}
        ports = {}
        for name in SERVER_PORTS:
            port = previous.get(name) or self.requested_ports[name] or process.free_port()
            while port in ports.values():
                port = process.free_port()
            process.check_port_free(port, f"{name} ({self.dir})")
            ports[name] = port
        return ports

    def _secrets(self) -> dict[str, str]:
        path = self.dir / "secrets.json"
        if path.exists():
            return self.secrets
        secret = {"eventhubs_connection_string": kafka.new_connection_string(EVENTHUBS_NAMESPACE, DEFAULT_TOPIC),
                  "influxdb_token": influxdb.new_token()}
        path.touch(mode=0o600)
        path.write_text(json.dumps(secret))
        return secret


def create_topic(bootstrap_servers: str, topic: str, partitions: int, append_time: bool = False,
                 config: dict[str, str] | None = None) -> None:
    """Create a topic on the local broker if it does not exist yet (on Event Hubs, create the hub in Azure).

    `append_time`: the broker stamps each record with the time it appended it (`LogAppendTime`), as Event Hubs
    does; otherwise a record keeps its producer's timestamp (Kafka's default, `CreateTime`). `config`: more of the
    topic's settings."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    if topic in admin.list_topics(timeout=15).topics:
        return
    config = ({"message.timestamp.type": "LogAppendTime"} if append_time else {}) | (config or {})
    new_topic = NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config)
    future = admin.create_topics([new_topic])[topic]
    try:
        future.result(timeout=30)
    except KafkaException as err:
        if "TOPIC_ALREADY_EXISTS" not in str(err):
            raise StackError(f"could not create Kafka topic {topic!r}: {err}") from None
    # The broker answers the creation before every partition has a leader in its metadata; a client that asks
    # for the topic in that gap is told it is not available.
    deadline = time.monotonic() + 30
    while not _has_leaders(admin.list_topics(topic, timeout=15).topics.get(topic)):
        if time.monotonic() > deadline:
            raise StackError(f"Kafka topic {topic!r} was created but its partitions have no leader after 30 s")
        time.sleep(0.1)


def _has_leaders(metadata) -> bool:
    return (metadata is not None and metadata.error is None and bool(metadata.partitions)
            and all(partition.leader >= 0 for partition in metadata.partitions.values()))
