"""One vocabulary: the event schema, the shipped models and the generator agree with edge/vocabulary.py."""

from __future__ import annotations

import json
from pathlib import Path

from edge.vocabulary import CLASSES, EVICT_FIRST, LABELS, UNKNOWN

ROOT = Path(__file__).resolve().parents[1]


def test_event_schema_label_enum_is_the_vocabulary():
    schema = json.loads((ROOT / "edge" / "schemas" / "event.schema.json").read_text())
    assert tuple(schema["$defs"]["class"]["enum"]) == CLASSES
    allowed = [a.get("const") or a.get("$ref") for a in schema["properties"]["label"]["anyOf"]]
    assert allowed == ["#/$defs/class", UNKNOWN]
    assert set(LABELS) == set(CLASSES) | {UNKNOWN}


def test_shipped_models_speak_the_vocabulary():
    for card in sorted((ROOT / "models").glob("*/model_card.json")):
        assert tuple(json.loads(card.read_text())["classes"]) == CLASSES, card


def test_eviction_policy_names_classes():
    assert set(EVICT_FIRST) <= set(CLASSES)
