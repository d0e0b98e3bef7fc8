"""Sinks: write per micro-batch (foreachBatch), idempotently, from the executors."""
