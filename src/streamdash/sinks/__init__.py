"""Sinks: where a micro-batch's rows go from `foreachBatch`, idempotently. Every sink of a batch is a `BatchSink`
(`report.py`): the windows' `LineSinks` (InfluxDB, then Grafana Live, written from the executors) and the
`DeadLetters`; `micro_batch.py` writes them in order."""
