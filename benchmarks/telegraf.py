"""(c) Telegraf on the same topic: `kafka_consumer` + `json_v2` + `basicstats` + `quantile` -> InfluxDB."""

from __future__ import annotations

import subprocess
import time
import uuid

from benchmarks.measure import (
    CONTRACT,
    INFLUX_BATCH_SIZE,
    Bench,
    ProcessTree,
)
from streamdash_toolbox.stack import install
from streamdash_toolbox.testing.pipeline import wait_for


def telegraf(bench: Bench, topic: str, records: int) -> dict:
    """(c) from Telegraf's start until its group has committed the topic's end (`consumed_s`) and its aggregates stop
    changing (`seconds`); `period_wait_s` is the rest: its aggregators emit a 10 s period when the period ends."""
    from confluent_kafka import Consumer, TopicPartition

    database, group = bench.new_database("telegraf"), f"telegraf-{uuid.uuid4().hex[:8]}"
    user, password = bench.token.split(":", 1)
    config = bench.work / f"{group}.conf"
    config.write_text(TELEGRAF_CONFIG.format(brokers=bench.bootstrap, topic=topic, group=group, url=bench.url,
                                             database=database, user=user, password=password,
                                             fields=TELEGRAF_FIELDS, batch_size=INFLUX_BATCH_SIZE))
    consumer = Consumer({"bootstrap.servers": bench.bootstrap, "group.id": group, "enable.auto.commit": False})
    partitions = [TopicPartition(topic, p) for p in range(4)]
    ends = {p.partition: consumer.get_watermark_offsets(p, timeout=10)[1] for p in partitions}
    proc = subprocess.Popen([str(install.telegraf_binary()), "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=(bench.work / f"{group}.log").open("w"))
    tree = ProcessTree(proc.pid)
    started = time.monotonic()

    def committed_everything() -> bool:
        offsets = consumer.committed(partitions, timeout=10)
        return all(p.offset >= ends[p.partition] for p in offsets)

    def landed() -> int:
        rows = bench.query('SELECT sum("temperature_count") FROM telemetry', database)
        return int(rows[0]["sum"]) if rows else 0

    try:
        assert wait_for(committed_everything, 1800, every_s=0.25), "Telegraf did not consume the topic"
        consumed_s = time.monotonic() - started
        final, final_at = landed(), time.monotonic()
        # Telegraf emits each 10 s period's aggregates when the period ends, and writes them at the next flush
        while final == 0 or time.monotonic() - final_at < 12:
            time.sleep(0.25)
            if landed() != final:
                final, final_at = landed(), time.monotonic()
        seconds = final_at - started
    finally:
        tree.stop()
        proc.terminate()
        proc.wait(timeout=30)
        consumer.close()
    return {"side": "(c) Telegraf", "events_per_s": records / seconds, "seconds": seconds,
            "consumed_s": consumed_s, "period_wait_s": seconds - consumed_s,
            "cpu_s_per_1k": tree.cpu_s() / records * 1000, "aggregated_events": final}


TELEGRAF_CONFIG = """
[agent]
  interval = "1s"
  flush_interval = "1s"
  metric_batch_size = {batch_size}
  metric_buffer_limit = 1000000
  omit_hostname = true

[[inputs.kafka_consumer]]
  brokers = ["{brokers}"]
  topics = ["{topic}"]
  consumer_group = "{group}"
  offset = "oldest"
  kafka_version = "4.1.0"
  max_undelivered_messages = 10000
  data_format = "json_v2"
  [[inputs.kafka_consumer.json_v2]]
    measurement_name = "telemetry"
    timestamp_path = "eventTime"
    timestamp_format = "unix_ms"
    [[inputs.kafka_consumer.json_v2.tag]]
      path = "site"
    [[inputs.kafka_consumer.json_v2.tag]]
      path = "deviceId"
{fields}
[[aggregators.basicstats]]
  period = "10s"
  grace = "8760h"
  drop_original = true
  stats = ["count", "min", "max", "mean", "stdev"]

[[aggregators.quantile]]
  period = "10s"
  grace = "8760h"
  drop_original = true
  quantiles = [0.95]

[[outputs.influxdb]]
  urls = ["{url}"]
  database = "{database}"
  skip_database_creation = true
  username = "{user}"
  password = "{password}"
  content_encoding = "gzip"
"""


TELEGRAF_FIELDS = "".join(f"""    [[inputs.kafka_consumer.json_v2.field]]
      path = "{measurement.path.removeprefix('$.')}"
      rename = "{name}"
      type = "float"
""" for name, measurement in CONTRACT.measurements.items())
