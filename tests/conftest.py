"""Session fixtures: a real local stack (Kafka + InfluxDB) on free ports, a local Spark session, and on demand a
Spark standalone cluster.

The stack lives in a temporary folder; its servers die with the test run (PR_SET_PDEATHSIG) and are
stopped at the end of the session even when tests fail.
"""

from __future__ import annotations

import os
import sys
import uuid

import pytest

from streamdash_toolbox.stack import Stack, create_topic
from streamdash_toolbox.testing import FREE_PORTS, Influx
from streamdash_toolbox.testing.http_servers import FaultServer

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


SERVER_FIXTURES = {"stack", "spark_cluster"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs the servers `stack`, and run the others first: `make test-fast` is
    `-m "not stack and not slow"`, and the whole suite says something within a minute instead of after the stack's
    start."""
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.stack)
    items.sort(key=lambda item: item.get_closest_marker("stack") is not None)


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("stack"), ports=FREE_PORTS, die_with_parent=True)
    try:
        stack.up()
        yield stack
    finally:
        stack.down()


@pytest.fixture(scope="session")
def spark_cluster(stack) -> dict:
    """A Spark standalone master and two workers (separate JVMs) beside the stack, stopped with it."""
    return stack.up(spark_workers=2)["spark"]


@pytest.fixture(scope="session")
def stack_env(stack) -> dict[str, str]:
    return stack.env()


@pytest.fixture()
def topic(stack) -> str:
    """A new Kafka topic whose records keep their producer's timestamp (Kafka's default, CreateTime)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    create_topic(stack.info["kafka"]["bootstrap_servers"], name, partitions=3)
    return name


@pytest.fixture()
def eventhub(stack) -> str:
    """A new topic stamped as an event hub stamps its events: with the time the broker appended them."""
    name = f"eh-{uuid.uuid4().hex[:10]}"
    create_topic(stack.info["kafka"]["bootstrap_servers"], name, partitions=3, append_time=True)
    return name


@pytest.fixture(scope="session")
def influx(stack) -> Influx:
    return Influx(stack)


@pytest.fixture()
def database(influx) -> str:
    """A database of the test's own in the stack's InfluxDB."""
    return influx.create_database("e2e")


@pytest.fixture(scope="session")
def spark():
    """The notebooks' local session (Kafka connector, Delta Lake), with fewer shuffle partitions for tiny data."""
    from streamdash_toolbox.notebook_runtime import local_spark

    session = local_spark()
    session.conf.set("spark.sql.shuffle.partitions", "2")
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture()
def fault_server():
    servers: list[FaultServer] = []

    def make(script, **options):
        servers.append(FaultServer(script, **options))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


