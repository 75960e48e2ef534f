"""Helpers shared by the tests: the shipped model, model variants, configs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shipped_model() -> Path:
    """The shipped triaxial model directory (it is committed: its absence is a failure, not a skip)."""
    model = REPO / "models" / "triaxial"
    if not (model / "model_card.json").is_file():
        pytest.fail("models/triaxial is missing: the shipped model must be committed")
    return model


def model_variant(src: Path, dst: Path, **card_changes) -> Path:
    """A copy of model ``src`` (model.tflite + card) with some card keys changed (same weights)."""
    dst.mkdir(parents=True)
    shutil.copyfile(src / "model.tflite", dst / "model.tflite")
    card = json.loads((src / "model_card.json").read_text())
    card.pop("files", None)
    card.update(card_changes)
    (dst / "model_card.json").write_text(json.dumps(card))
    return dst


def write_config(path: Path, state_dir: Path, **sections) -> Path:
    """A daemon config: node.state_dir and model.path in the store layout, plus ``sections`` {name: {k: v}}."""
    data = {"node": {"site": "test-site", "node": "n1", "state_dir": str(state_dir)},
            "model": {"path": str(state_dir / "models" / "current")}}
    for name, table in sections.items():
        data.setdefault(name, {}).update(table)
    lines = []
    for name, table in data.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in table.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path
