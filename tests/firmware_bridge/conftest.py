"""Shared helpers for the firmware_bridge tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import firmware_bridge

VECTOR_DIR = Path(firmware_bridge.__file__).resolve().parent / "vectors"


@pytest.fixture(scope="session")
def vectors() -> list[dict]:
    return json.loads((VECTOR_DIR / "vectors.json").read_text())
