"""The Kafka source's read limits, against the stack's real broker."""

from __future__ import annotations

import time

from confluent_kafka import Producer

from streamdash.config import KafkaSource
from streamdash.sources import kafka
from tests.pipeline import wait_for


def produce(bootstrap: str, topic: str, count: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for n in range(count):
        producer.produce(topic, value=b"{}", key=str(n).encode())
    assert producer.flush(30) == 0


def test_a_query_with_a_max_delay_waits_for_a_full_batch(spark, stack, topic):
    """What the dead-letter query relies on: records short of a full batch wait for `max_delay`; once a full
    batch has arrived, it is read at once."""
    bootstrap = stack.info["kafka"]["bootstrap_servers"]
    source = KafkaSource(bootstrap_servers=bootstrap, topic=topic, starting_offsets="earliest",
                         max_offsets_per_trigger=100)
    produce(bootstrap, topic, 10)
    batches: list[int] = []
    query = (kafka.read_stream(spark, source, max_delay="1 hour").writeStream
             .trigger(processingTime="200 milliseconds")
             .foreachBatch(lambda batch, batch_id: batches.append(batch.count())).start())
    try:
        assert wait_for(lambda: batches, 60, every_s=0.2), "the first trigger reads what is there"
        produce(bootstrap, topic, 5)
        time.sleep(3)  # fifteen triggers, and none may start a batch for 5 records
        assert batches == [10]
        produce(bootstrap, topic, 95)
        assert wait_for(lambda: len(batches) == 2, 60, every_s=0.2), "a full batch is read at once"
        assert batches == [10, 100]
    finally:
        query.stop()
