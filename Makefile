# The two commands: `make run` (the pipeline on a local stack) and `make test` (the whole suite).
# Everything is installed by these targets, each step visible: a virtualenv with pinned packages (the job and the
# toolbox beside it), then Kafka, InfluxDB, Spark's Kafka connector (and, for the tests' benchmark smoke run,
# Telegraf) into $STREAMDASH_HOME (default ~/.cache/streamdash) on first use.

# A CPython 3.13+ when the machine has one (pyenv's included), else python3 (3.11+). Before 3.13, every PySpark
# task's importlib.invalidate_caches() re-reads the zip archives on the worker's path (pyspark.zip, the spark-core
# jar): ~0.1 s per task, one task per micro-batch on the job's last stage (CPython gh-103200).
PYTHON ?= $(firstword $(foreach python,python3.14 python3.13 $(wildcard $(HOME)/.pyenv/versions/3.1[3-9]*/bin/python3) \
  python3,$(shell $(python) -c 'print("$(python)")' 2>/dev/null)))
VENV := .venv
BIN := $(VENV)/bin
export SPARK_LOCAL_IP ?= 127.0.0.1

.PHONY: install run test test-fast lint stack-down clean

$(BIN)/streamdash: pyproject.toml toolbox/pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -c requirements.lock -e '.[dev]' -e ./toolbox
	touch $@

install: $(BIN)/streamdash

## The pipeline, locally: stack up, the job under spark-submit, the simulator feeding it. Ctrl-C stops.
## The job runs in its own session (setsid): Ctrl-C reaches only this recipe, whose trap asks the job's Python
## driver, found by its process group, to finish its batch and stop.
run: install
	$(BIN)/streamdash stack install
	$(BIN)/streamdash stack up
	eval "$$($(BIN)/streamdash stack env)" && \
	PYSPARK_PYTHON=$(abspath $(BIN)/python) setsid $(BIN)/spark-submit --master 'local[2]' --driver-memory 2g \
	  --conf spark.ui.enabled=false --driver-java-options '-Dlog4j2.configurationFile=conf/log4j2.properties' \
	  --jars "$$($(BIN)/streamdash stack jars)" \
	  jobs/stream_to_influx.py --env local & job=$$!; \
	trap "pkill -TERM -g $$job -f '^[^ ]*python[^ ]* [^ ]*jobs/stream_to_influx.py'; wait $$job" EXIT INT TERM; \
	eval "$$($(BIN)/streamdash stack env)" && $(BIN)/streamdash simulate --rate 200 --duration 3600; \
	wait $$job

## The whole test suite against real Kafka, InfluxDB and Spark (started and stopped by the tests).
test: lint
	$(BIN)/streamdash stack install --telegraf
	$(BIN)/pytest

## What needs no server: configuration, contract, transforms on literal DataFrames, line protocol, packaging, bundle.
test-fast: lint
	$(BIN)/pytest -m "not stack"

lint: install
	$(BIN)/ruff check src toolbox tests jobs notebooks benchmarks

stack-down:
	$(BIN)/streamdash stack down

clean: stack-down
	rm -rf .streamdash spark-warehouse
