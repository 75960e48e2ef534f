"""Write edge/vocabulary.py's classes into the event JSON Schema's class enum (run after adding a class).

    .venv/bin/python scripts/sync_schema_vocabulary.py

tests/test_vocabulary.py fails until the schema and the vocabulary agree.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from edge.vocabulary import CLASSES

SCHEMA = Path(__file__).resolve().parents[1] / "edge" / "schemas" / "event.schema.json"


def main() -> int:
    text = SCHEMA.read_text()
    new, n = re.subn(r'("class": \{"enum": )\[[^\]]*\]', lambda m: m.group(1) + json.dumps(list(CLASSES)), text)
    if n != 1:
        raise SystemExit(f"{SCHEMA}: expected one '\"class\": {{\"enum\": [...]}}' definition, found {n}")
    json.loads(new)  # still valid JSON
    SCHEMA.write_text(new)
    print(f"{SCHEMA}: class enum = {', '.join(CLASSES)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
