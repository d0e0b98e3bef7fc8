# The two commands: `make run` (the pipeline on a local stack) and `make test` (the whole suite).
# Everything is installed by these targets: a virtualenv with pinned packages, then Kafka, InfluxDB, Spark's
# Kafka connector (and, for the tests' benchmark smoke run, Telegraf) into ~/.cache/streamdash on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export SPARK_LOCAL_IP ?= 127.0.0.1

.PHONY: install run test lint stack-down clean

$(BIN)/streamdash: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -c requirements.lock -e '.[dev]'
	touch $@

install: $(BIN)/streamdash

## The pipeline, locally: stack up, the job under spark-submit, the simulator feeding it. Ctrl-C stops.
run: install
	$(BIN)/streamdash stack up
	eval "$$($(BIN)/streamdash stack env)" && \
	PYSPARK_PYTHON=$(abspath $(BIN)/python) $(BIN)/spark-submit --master 'local[2]' --driver-memory 2g \
	  --conf spark.ui.enabled=false --jars "$$($(BIN)/streamdash stack jars)" \
	  jobs/stream_to_influx.py --env local & job=$$!; \
	trap "pkill -TERM -f '^[^ ]*python[^ ]* [^ ]*jobs/stream_to_influx.py'; wait $$job" EXIT INT TERM; \
	eval "$$($(BIN)/streamdash stack env)" && $(BIN)/streamdash simulate --rate 200 --duration 3600; \
	wait $$job

## The whole test suite against real Kafka, InfluxDB and Spark (started and stopped by the tests).
test: install
	$(BIN)/ruff check src tests jobs notebooks benchmarks
	$(BIN)/python -c 'from streamdash.stack.install import install_everything; install_everything()'
	$(BIN)/pytest

stack-down:
	$(BIN)/streamdash stack down

clean: stack-down
	rm -rf .streamdash spark-warehouse
