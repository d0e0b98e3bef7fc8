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

.PHONY: install run test test-fast lint docs stack-down clean

$(BIN)/streamdash: pyproject.toml toolbox/pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -c requirements.lock -e '.[dev]' -e ./toolbox
	touch $@

install: $(BIN)/streamdash

## The pipeline, locally: stack up, the job (`streamdash job`: spark-submit in a session of its own), the simulator
## feeding it. Ctrl-C stops the simulator, and the job after its batch in flight. A new checkpoint reads the topic
## from its start (conf/local.toml), so what the simulator sends while Spark starts is read too.
run: install
	$(BIN)/streamdash stack install
	$(BIN)/streamdash stack up
	eval "$$($(BIN)/streamdash stack env)" && { \
	  $(BIN)/streamdash job -- --env local & job=$$!; \
	  trap 'kill -INT $$job 2>/dev/null; wait $$job' EXIT INT TERM; \
	  $(BIN)/streamdash simulate --rate 200 --duration 3600; \
	  wait $$job; }

## The whole test suite against real Kafka, InfluxDB and Spark (started and stopped by the tests).
test: lint
	$(BIN)/streamdash stack install --telegraf
	$(BIN)/pytest -v  # -v: each test is named as it starts

## What needs no server and no minute of Spark: configuration, contract, transforms on literal DataFrames, line
## protocol, packaging, bundle (the property tests, Delta tests and benchmark runs are `slow`: make test runs them).
test-fast: lint
	$(BIN)/pytest -v -m "not stack and not slow"

lint: install
	$(BIN)/ruff check src toolbox tests jobs notebooks benchmarks

## docs/configuration.md's table of every setting, from the configuration models.
docs: install
	$(BIN)/python -m streamdash_toolbox.reference docs/configuration.md

stack-down:
	$(BIN)/streamdash stack down

clean: stack-down
	rm -rf .streamdash spark-warehouse
