"""A single-node Apache Kafka broker in KRaft mode with two client listeners.

- PLAINTEXT for plain local development;
- SASL_SSL with mechanism PLAIN that authenticates like the Azure Event Hubs Kafka endpoint: the user name
  is `$ConnectionString` and the password is the namespace's connection string. Any other password is refused.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from pathlib import Path

from streamdash_toolbox.stack import install, process

LOG4J2 = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
"""


def new_connection_string(namespace: str, hub: str) -> str:
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    return (f"Endpoint=sb://{namespace}.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;"
            f"SharedAccessKey={key};EntityPath={hub}")


def new_cluster_id() -> str:
    """A KRaft cluster id as Kafka makes them: URL-safe base64 of a UUID, never starting with '-' (which the
    storage tool's argument parser would take for an option)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def server_properties(folder: Path, ports: dict[str, int], connection_string: str, keystore: Path) -> str:
    plain, sasl, controller = ports["kafka"], ports["kafka_sasl"], ports["kafka_controller"]
    jaas = ("org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'user_$ConnectionString="{connection_string}";')
    return "\n".join([
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@127.0.0.1:{controller}",
        f"listeners=PLAINTEXT://127.0.0.1:{plain},SASL_SSL://127.0.0.1:{sasl},CONTROLLER://127.0.0.1:{controller}",
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{plain},SASL_SSL://127.0.0.1:{sasl}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
        "listener.name.sasl_ssl.sasl.enabled.mechanisms=PLAIN",
        f"listener.name.sasl_ssl.plain.sasl.jaas.config={jaas}",
        "listener.name.sasl_ssl.ssl.keystore.type=PEM",
        f"listener.name.sasl_ssl.ssl.keystore.location={keystore}",
        f"log.dirs={folder / 'data'}",
        "num.partitions=4",
        "auto.create.topics.enable=false",
        "offsets.topic.replication.factor=1",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        # Event Hubs accepts events up to 1 MB; keep the same ceiling so oversize payloads behave alike.
        "message.max.bytes=1048576",
        "",
    ])


def start(stack_dir: Path, ports: dict[str, int], connection_string: str, keystore: Path,
          die_with_parent: bool) -> None:
    java = install.require_java()
    classpath = install.kafka_broker_classpath()
    folder = stack_dir / "kafka"
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "server.properties"
    config.write_text(server_properties(folder, ports, connection_string, keystore))
    config.chmod(0o600)
    (folder / "log4j2.properties").write_text(LOG4J2)
    java_argv = [java, "-Xms256m", "-Xmx768m", f"-Dlog4j2.configurationFile={folder / 'log4j2.properties'}",
                 "-cp", f"{classpath}/*"]
    log_file = stack_dir / "logs" / "kafka.log"
    if not (folder / "data" / "meta.properties").exists():
        cluster_id = new_cluster_id()
        process.run_to_log([*java_argv, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config)],
                           log_file, "formatting Kafka's KRaft storage")
    pid_file = stack_dir / "run" / "kafka.pid"
    process.start([*java_argv, "kafka.Kafka", str(config)], pid_file, log_file, die_with_parent=die_with_parent)
    process.wait_until(lambda: _answers_metadata(ports["kafka"]), pid_file, log_file, "Kafka", timeout_s=90)


def _answers_metadata(port: int) -> bool:
    from confluent_kafka.admin import AdminClient

    try:
        AdminClient({"bootstrap.servers": f"127.0.0.1:{port}", "log_level": 0}).list_topics(timeout=2)
    except Exception:  # noqa: BLE001 - any failure just means "not yet"
        return False
    return True
