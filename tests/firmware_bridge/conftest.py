"""Shared fixtures for the firmware_bridge tests.

tests/ is on sys.path (the top-level conftest lives there), so under a bare ``pytest`` this
directory, tests/firmware_bridge, would be imported as a namespace package in place of the
real firmware_bridge (the editable install's finder comes after the path scan). Putting the
repository root first makes ``import firmware_bridge`` find the package.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if sys.path[:1] != [str(ROOT)]:
    sys.path.insert(0, str(ROOT))
_mod = sys.modules.get("firmware_bridge")
if _mod is not None and getattr(_mod, "__file__", None) is None:
    del sys.modules["firmware_bridge"]  # the namespace stand-in, imported before this file ran

VECTOR_DIR = ROOT / "firmware_bridge" / "vectors"


@pytest.fixture(scope="session")
def vector_dir() -> Path:
    return VECTOR_DIR


@pytest.fixture(scope="session")
def vectors() -> list[dict]:
    return json.loads((VECTOR_DIR / "vectors.json").read_text())
