"""The docs' examples run: each contract in docs/contract.md loads and parses the payload shown beside it."""

from __future__ import annotations

import datetime as dt
import json
import re
import tomllib

import pytest

from streamdash.config import Contract, Validation
from streamdash.transforms.parse import parse_events, valid_events
from streamdash_toolbox.amqp import DEVICE_ID, ENQUEUED_TIME, MESSAGE_SOURCE, iothub_headers
from streamdash_toolbox.testing import REPO
from streamdash_toolbox.testing.records import raw

CONTRACT_DOC = REPO / "docs" / "contract.md"


def examples() -> list[tuple[str, str]]:
    """(TOML, JSON) for each example: a ```toml block followed by a ```json block."""
    return re.findall(r"```toml\n(.*?)```\s*```json\n(.*?)```", CONTRACT_DOC.read_text(), re.S)


def test_the_contract_doc_has_its_four_examples():
    assert len(examples()) == 4


def iothub_headers_shown() -> list[tuple[str, bytes]]:
    """The IoT Hub example's properties as the Event Hubs endpoint delivers them: AMQP-encoded."""
    text = re.search(r"The properties IoT Hub adds.*?```json\n(.*?)```", CONTRACT_DOC.read_text(), re.S).group(1)
    properties = json.loads(text)
    enqueued = dt.datetime.fromisoformat(properties.pop(ENQUEUED_TIME))
    device = properties.pop(DEVICE_ID)
    return iothub_headers(device, enqueued, {k: v for k, v in properties.items() if k != MESSAGE_SOURCE})


@pytest.mark.parametrize("index", [0, 1, 2, 3], ids=["simulator", "flat", "iothub", "readings"])
def test_each_example_contract_parses_its_payload(spark, index):
    toml_text, payload = examples()[index]
    contract = Contract.model_validate(tomllib.loads(toml_text)["contract"])
    if index == 0:
        assert contract == Contract(), "the first example is the default, written out"
    payload = " ".join(payload.split())
    headers = [iothub_headers_shown()] if index == 2 else None
    [event] = valid_events(parse_events(raw(spark, payload, headers=headers), Validation(),
                                        contract)).collect()
    assert event.device_id in ("dev-0001", "ahu-7", "pump-7", "gw-3/cold-room-2") and event.event_time is not None
    assert all(event[name] is not None for name in contract.measurements)


def test_the_configuration_reference_is_generated_from_the_models():
    """docs/configuration.md's table states every setting and default as the models do (`make docs` rewrites it)."""
    from streamdash_toolbox.reference import BEGIN, END, configuration_table

    page = (REPO / "docs" / "configuration.md").read_text()
    assert page[page.index(BEGIN):page.index(END) + len(END)] == configuration_table(), "stale: run `make docs`"
    assert "`aggregation.watermark` | duration, at most 1 day | `\"30 seconds\"`" in page


def fields_of(annotation) -> set[str]:
    """The field names of a section's model, or of every model it may be (the source's kinds)."""
    import typing

    if hasattr(annotation, "model_fields"):
        return set(annotation.model_fields)
    return {name for arg in typing.get_args(annotation) for name in fields_of(arg)}


def test_every_command_in_the_readme_and_docs_names_what_exists():
    """Each shell line in the README's and docs' code blocks that runs `make`, `streamdash` or `python -m` names
    a Makefile target, a `streamdash` subcommand or a module that exists, and each `--set` key is a setting."""
    import importlib.util

    from streamdash.config import Settings
    from streamdash_toolbox.cli import build_parser

    blocks = [block for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
              for block in re.findall(r"```(?:bash|sh)\n(.*?)```", page.read_text(), re.S)]
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    targets = set(re.findall(r"(?m)^([a-z-]+):", (REPO / "Makefile").read_text()))
    subcommands = set(build_parser()._subparsers._group_actions[0].choices)
    checked = 0
    for line in lines:
        for target in re.findall(r"(?:^|&& )make ([a-z-]+)", line):
            assert target in targets, line
            checked += 1
        for command in re.findall(r"(?:^|&& |\$\(|/)streamdash ([a-z]+)", line):
            assert command in subcommands, line
            checked += 1
        for module in re.findall(r"python -m ([\w.]+)", line):
            assert importlib.util.find_spec(module) is not None, line
            checked += 1
        for section, field in re.findall(r"--set '?([a-z_]+)\.([a-z_]+)", line):
            assert field in fields_of(Settings.model_fields[section].annotation), line
            checked += 1
    assert checked >= 10, checked


def test_the_entry_point_s_spark_submit_line_turns_delta_on_as_streamdash_job_does():
    """By hand, spark-submit needs the Delta settings that `streamdash job` passes, or a configured table fails at
    its first write, minutes in."""
    from streamdash_toolbox.stack.install import DELTA_SESSION_CONF

    text = (REPO / "jobs" / "stream_to_influx.py").read_text()
    assert all(f"--conf {key}={value}" in text for key, value in DELTA_SESSION_CONF.items())
