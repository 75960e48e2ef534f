"""The contract documents under docs/ against what the code really produces.

Each test measures the real thing (argparse parser, files written by the generator and the
importer, a replayed event message, a health message, the shipped model cards, the JSON Schemas)
and checks that docs/ describes every key of it, so a new field or option without documentation
fails here.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from edge.cli import _join_negative_values, build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def doc(name: str) -> str:
    return (DOCS / name).read_text()


def _names(text: str) -> set[str]:
    """Every name written in backticks: `a`, `{a, b}`, `x.y` (also as x, y and x.y), `.p99`."""
    names: set[str] = set()
    for token in re.findall(r"`([^`\n]+)`", text):
        for word in re.findall(r"[\w.-]+", token):
            word = word.strip(".")
            parts = word.split(".")
            names.add(word)
            names.update(".".join(parts[:i]) for i in range(1, len(parts)))
            names.add(parts[-1])
    return names


def documented(text: str, key: str) -> bool:
    """``key`` is named in backticks; a dotted key ``a.b`` needs ``a.b``, or both ``a`` and ``b``."""
    names = _names(text)
    parts = key.split(".")
    return key in names or (len(parts) > 1 and parts[0] in names and parts[-1] in names)


def missing(text: str, keys) -> list[str]:
    return sorted({k for k in keys if not documented(text, k)})


def npz_keys(path: Path) -> set[str]:
    with np.load(path, allow_pickle=False) as z:
        return set(z.files)


# --------------------------------------------------------------------------- command line
def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command words, parser) of every leaf subcommand."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, child in subs[0].choices.items():
        yield from _commands(child, (*path, name))


def _sections(text: str) -> dict[str, str]:
    parts = re.split(r"^### `stopewatch ([^`]+)`$", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def test_cli_doc_has_every_command_and_option():
    sections = _sections(doc("cli.md"))
    commands = list(_commands(build_parser()))
    assert len(commands) >= 16
    for words, parser in commands:
        name = " ".join(words)
        assert name in sections, f"docs/cli.md has no section for 'stopewatch {name}'"
        body = sections[name]
        for action in parser._actions:
            for opt in action.option_strings:
                if opt.startswith("--"):
                    assert opt in body, f"docs/cli.md: 'stopewatch {name}' does not show {opt}"
            if not action.option_strings and action.metavar:
                assert str(action.metavar) in body, f"docs/cli.md: 'stopewatch {name}' lacks {action.metavar}"
        assert "Exit codes:" in body and "```sh" in body, f"docs/cli.md: 'stopewatch {name}' lacks exit codes/example"


def test_cli_doc_examples_parse_with_the_real_parser():
    text = doc("cli.md")
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    lines = [ln for b in blocks for ln in b.replace("\\\n", " ").splitlines() if ln.strip()]
    assert len(lines) >= 16
    seen = set()
    for line in lines:
        argv = shlex.split(line.split(">")[0])
        if argv[0] == "sudo":
            argv = argv[1:]
        assert argv[0] == "stopewatch", line
        args = build_parser().parse_args(_join_negative_values(argv[1:]))  # SystemExit = a broken example
        seen.add(args.func.__name__)
    assert len(seen) >= 16  # every command has a parsing example


# --------------------------------------------------------------------------- data formats
def test_data_formats_doc_has_every_key_written(tmp_path):
    from training.records import import_records
    from training.synthetic.generate import write_stream_file, write_window_dataset

    text = doc("data-formats.md")
    manifest = write_window_dataset(tmp_path / "w", count=6, seed=3, samples=256, shard_size=4, progress=False)
    shard_keys = {k for s in manifest["shards"] for k in s}
    keys = set(manifest) | shard_keys | npz_keys(tmp_path / "w" / manifest["shards"][0]["file"])

    stream = write_stream_file(tmp_path / "s.npz", seconds=20, seed=3, rate_per_min=30)
    keys |= npz_keys(stream)

    rec = tmp_path / "ST07.csv"
    rows = "\n".join(f"{i % 7},{-i % 5},{i % 3}" for i in range(12000))
    rec.write_text(f"# fs=4000\n# start_time=2024-03-01T12:00:00Z\n# station=ST07\nHHZ,HHN,HHE\n{rows}\n")
    labels = tmp_path / "labels.csv"
    labels.write_text("station,start_time,label,site,snr_db\nST07,2024-03-01T12:00:01,blast,x,3\n"
                      "ST07,2024-03-01T12:00:02.9,noise,x,\n")
    imported = import_records(tmp_path / "imp", labels, [rec], warn=lambda m: None)
    assert imported["skipped"] == 1  # the second window runs past the record's end
    keys |= set(imported) | {k for s in imported["shards"] for k in s} | {k for r in imported["records"] for k in r}
    keys |= {k for r in imported["skipped_rows"] for k in r}
    keys |= npz_keys(tmp_path / "imp" / imported["shards"][0]["file"])
    keys |= set(labels.read_text().splitlines()[0].split(",")) | {"file"}
    assert not missing(text, keys), f"docs/data-formats.md lacks {missing(text, keys)}"


# --------------------------------------------------------------------------- MQTT
def _schema_keys(schema: dict, prefix: str = "") -> set[str]:
    out = set()
    for name, sub in schema.get("properties", {}).items():
        out.add(prefix + name)
        out |= _schema_keys(sub, f"{prefix}{name}.")
    return out


@pytest.mark.parametrize("name", ["event", "waveform", "status"])
def test_mqtt_doc_has_every_schema_field(name):
    schema = json.loads((ROOT / "edge" / "schemas" / f"{name}.schema.json").read_text())
    keys = _schema_keys(schema)
    assert len(keys) >= 5
    text = doc("mqtt.md")
    assert f"edge/schemas/{name}.schema.json" in text
    assert not missing(text, keys), f"docs/mqtt.md lacks {name} fields {missing(text, keys)}"


def test_mqtt_doc_has_every_field_of_a_replayed_event(tmp_path):
    from edge.devtools.replay import replay
    from edge.gateway.config import parse_config
    from training.synthetic.generate import write_stream_file

    stream = write_stream_file(tmp_path / "s.npz", seconds=40, seed=5, site="za-deep-gold", rate_per_min=12,
                               families=["microseismic", "blast"], snr_db=(15.0, 25.0))
    cfg = parse_config({"node": {"state_dir": str(tmp_path)}, "model": {"path": str(ROOT / "models" / "triaxial")}})
    messages = replay(cfg, stream)["messages"]
    assert messages, "no event in 40 s of stream with events at 15-25 dB"
    keys = set()
    for m in messages:
        keys |= set(m) | {f"{k}.{s}" for k in ("window", "features", "model") for s in m[k]}
    text = doc("mqtt.md")
    assert not missing(text, keys), f"docs/mqtt.md lacks event fields {missing(text, keys)}"


def test_mqtt_doc_has_every_health_field(tmp_path):
    from field_support import shipped_model

    from edge.gateway.daemon import Daemon

    config = tmp_path / "stopewatch.toml"
    config.write_text(f'[node]\nstate_dir = "{tmp_path / "state"}"\n[model]\npath = "{shipped_model()}"\n')
    daemon = Daemon(str(config))  # a real daemon, not started: its health before any board or broker
    try:
        health = daemon.health()
    finally:
        daemon.publisher.outbox.close()
    keys = set(health) | {f"mqtt.{k}" for k in health["mqtt"]} | {f"inference_ms.{k}" for k in health["inference_ms"]} \
        | {f"outbox.{k}" for k in health["outbox"]}
    keys |= {f"archive.{k}" for k in health["archive"]}
    assert len(keys) > 30
    text = doc("mqtt.md")
    assert not missing(text, keys), f"docs/mqtt.md lacks health fields {missing(text, keys)}"


# --------------------------------------------------------------------------- model card
def test_model_card_doc_has_every_card_key():
    from edge.gateway.model import _REQUIRED
    from edge.gateway.preprocess import PreprocessParams

    cards = [json.loads(p.read_text()) for p in sorted(ROOT.glob("models/*/model_card.json"))]
    assert cards
    keys = set(_REQUIRED) | set(PreprocessParams.__dataclass_fields__) | {"channel_policy", "files", "installed"}
    for card in cards:
        keys |= set(card) | set(card["metrics"]) | set(card["input_quantization"]) | set(card["quantization"])
        keys |= set(card["pruning"]) | set(card["architecture"])
    # The open-set rule training writes (the shipped cards predate it): fitted on toy logits, card form.
    from training.metrics import fit_open_set

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(6), 20)
    logits = rng.normal(0, 1, (120, 6)) + 4 * np.eye(6)[y]
    rule = fit_open_set(logits, y, "mahalanobis", 0.05, 1.0).card()
    keys |= {"open_set"} | set(rule)
    text = doc("model-card.md")
    assert not missing(text, keys), f"docs/model-card.md lacks {missing(text, keys)}"


# --------------------------------------------------------------------------- hygiene
def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def test_docs_cite_no_external_design_notes():
    pattern = re.compile(r"SPEC\.md|DOMAIN\.md|LESSONS\.md|\.\./shared|shared/docs|(?<![\w/&])#\d+\b")
    for path in _markdown_files():
        hits = pattern.findall(path.read_text())
        assert not hits, f"{path.relative_to(ROOT)} cites {hits}"


def _slug(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_docs_links_resolve():
    link = re.compile(r"\]\(([^)\s]+)\)")
    checked = 0
    for path in _markdown_files():
        for target in link.findall(path.read_text()):
            if re.match(r"[a-z]+://", target):
                continue
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            assert dest.exists(), f"{path.relative_to(ROOT)}: link to missing {target}"
            if anchor and dest.suffix == ".md":
                slugs = {_slug(h) for h in re.findall(r"^#+ (.+)$", dest.read_text(), flags=re.M)}
                where = file_part or path.name
                assert anchor in slugs, f"{path.relative_to(ROOT)}: no heading for #{anchor} in {where}"
            checked += 1
    assert checked >= 20
