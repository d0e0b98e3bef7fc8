"""The docs' examples run: each contract in docs/contract.md loads and parses the payload shown beside it."""

from __future__ import annotations

import re
import tomllib

import pytest

from streamdash.config import Contract, Validation
from streamdash.transforms.parse import parse_events, valid_events

from .conftest import REPO
from .test_transforms import raw

CONTRACT_DOC = REPO / "docs" / "contract.md"


def examples() -> list[tuple[str, str]]:
    """(TOML, JSON) for each example: a ```toml block followed by a ```json block."""
    return re.findall(r"```toml\n(.*?)```\s*```json\n(.*?)```", CONTRACT_DOC.read_text(), re.S)


def test_the_contract_doc_has_its_two_examples():
    assert len(examples()) == 2


@pytest.mark.parametrize("index", [0, 1], ids=["simulator", "flat"])
def test_each_example_contract_parses_its_payload(spark, index):
    toml_text, payload = examples()[index]
    contract = Contract.model_validate(tomllib.loads(toml_text)["contract"])
    if index == 0:
        assert contract == Contract(), "the first example is the default, written out"
    payload = " ".join(payload.split())
    [event] = valid_events(parse_events(raw(spark, payload), Validation(),
                                        contract)).collect()
    assert event.device_id in ("dev-0001", "ahu-7") and event.event_time is not None
    assert all(event[name] is not None for name in contract.measurements)
