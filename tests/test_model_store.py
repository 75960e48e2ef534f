"""The model store: verified install, atomic swap, rollback, fit to the board, reload of a running daemon."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest
from field_support import model_variant, shipped_model, write_config

from edge.cli import main
from edge.errors import UserError
from edge.field.model_store import Board, ModelStore, card_fit, read_board, version_key
from edge.gateway.model import Classifier, sha256_file


@pytest.fixture
def model():
    return shipped_model()


def test_install_makes_current_and_reinstall_changes_nothing(tmp_path, model):
    store = ModelStore(tmp_path / "models")
    r = store.install(model)
    assert r.changed and r.previous is None
    assert os.readlink(store.current) == f"versions/{r.path.name}"
    clf = Classifier(store.current)  # the daemon's view: sha256 of the installed copy matches its card
    assert clf.card["sha256"] == sha256_file(model / "model.tflite")
    again = store.install(model)
    assert not again.changed and store.previous_sha() is None


def test_swap_keeps_previous_and_rollback_swaps_back(tmp_path, model):
    store = ModelStore(tmp_path / "models")
    first = store.install(model)
    second = store.install(model_variant(model, tmp_path / "v2", version="1.0.1", temperature=1.3))
    assert second.changed and second.previous == first.path.name
    assert Classifier(store.current).card["version"] == "1.0.1"
    assert store.rollback() == (first.path.name, second.path.name)
    assert Classifier(store.current).card["version"] == Classifier(model).card["version"]
    assert store.previous_sha() == second.path.name
    rows = {r["key"]: r for r in store.list()}
    assert rows[first.path.name]["role"] == "current" and rows[second.path.name]["role"] == "previous"
    assert all(r["sha_ok"] for r in rows.values())


def test_rollback_without_previous_is_one_clear_error(tmp_path, model):
    store = ModelStore(tmp_path / "models")
    store.install(model)
    with pytest.raises(UserError, match="no previous model"):
        store.rollback()


def test_altered_model_is_refused_and_current_kept(tmp_path, model):
    store = ModelStore(tmp_path / "models")
    store.install(model)
    before = os.readlink(store.current)
    bad = model_variant(model, tmp_path / "bad", version="9")
    with open(bad / "model.tflite", "ab") as f:
        f.write(b"\0")
    with pytest.raises(UserError, match="sha256"):
        store.install(bad)
    assert os.readlink(store.current) == before
    assert not any(p.name.endswith(".part") for p in store.versions.iterdir())


def test_card_must_fit_the_board_and_window(tmp_path, model):
    card = Classifier(model).card
    assert card_fit(card, Board(card["fs"], card["channels"])) == []
    slow = card_fit(card, Board(2000.0, card["channels"]))
    assert slow and slow[0].fatal and "2000 Hz" in slow[0].text
    strict = dict(card, channel_policy="strict")
    assert any("channel" in p.text for p in card_fit(strict, Board(card["fs"], 1)))
    assert any("pre_s" in p.text for p in card_fit(card, None, pre_s=card["samples"] / card["fs"] + 1))
    store = ModelStore(tmp_path / "models")
    with pytest.raises(UserError, match="does not fit"):
        store.install(model, board=Board(2000.0, 3))
    assert store.current_sha() is None
    assert store.install(model, board=Board(2000.0, 3), force=True).warnings


def test_archive_install(tmp_path, model):
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(model / "model.tflite", "stopewatch-triaxial/model.tflite")
        tf.add(model / "model_card.json", "stopewatch-triaxial/model_card.json")
    store = ModelStore(tmp_path / "models")
    assert store.install(archive).changed
    assert Classifier(store.current).card["sha256"] == sha256_file(model / "model.tflite")


def test_readers_never_see_a_half_swapped_model(tmp_path, model):
    store = ModelStore(tmp_path / "models")
    a = model_variant(model, tmp_path / "a", version="a")
    b = model_variant(model, tmp_path / "b", version="b")
    store.install(a)
    stop, seen, errors = threading.Event(), set(), []

    def reader():
        while not stop.is_set():
            try:  # what the daemon does on reload: open current's card and weights
                card = json.loads((store.current / "model_card.json").read_text())
                assert sha256_file(store.current / "model.tflite") == card["sha256"]
                seen.add(card["version"])
            except Exception as exc:  # noqa: BLE001 - any failure is what this test looks for
                errors.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    for _ in range(15):
        store.install(b)
        store.rollback()
    stop.set()
    t.join()
    assert not errors and seen == {"a", "b"}


def test_cli_install_list_rollback_under_root(tmp_path, model, capsys):
    root = tmp_path / "root"
    cfg = write_config(root / "etc/stopewatch/stopewatch.toml", Path("/var/lib/stopewatch"))
    (root / "var/lib/stopewatch").mkdir(parents=True)
    args = ["--config", "/etc/stopewatch/stopewatch.toml", "--root", str(root)]
    assert cfg.is_file()
    assert main(["model", "install", str(model), *args]) == 0
    assert Classifier(model).card["version"] != "3.0.0"  # the variant must be another version than the shipped one
    v2 = model_variant(model, tmp_path / "v2", version="3.0.0")
    assert main(["model", "install", str(v2), *args, "--board-fs", "4000", "--board-channels", "3"]) == 0
    assert main(["model", "list", *args]) == 0
    out = capsys.readouterr().out
    assert "current" in out and "previous" in out and "3.0.0" in out
    assert main(["model", "rollback", *args]) == 0
    store = ModelStore(root / "var/lib/stopewatch/models")
    assert store.current_sha() == version_key(Classifier(model).card)
    assert main(["model", "install", str(tmp_path / "nope"), *args]) == 2


def test_install_uses_the_board_measured_by_doctor(tmp_path, model):
    from edge.field.model_store import write_board

    state = tmp_path / "state"
    write_board(state, Board(2000.0, 3, "measured"))
    assert read_board(state) == Board(2000.0, 3, "measured")
    cfg = write_config(tmp_path / "c.toml", state)
    assert main(["model", "install", str(model), "--config", str(cfg), "--no-reload"]) == 2


def test_running_daemon_reloads_the_new_model(tmp_path, model):
    """A real daemon (no board, no broker) gets SIGHUP from `model install --pid` and loads the new model."""
    state = tmp_path / "state"
    ModelStore(state / "models").install(model)
    cfg = write_config(tmp_path / "c.toml", state, board={"port": str(tmp_path / "no-board")},
                       mqtt={"host": "127.0.0.1", "port": 9})
    env = dict(os.environ, STOPEWATCH_LOG="INFO")
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config", str(cfg)], env=env,
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True).start()
    try:
        deadline = time.monotonic() + 60
        while not any("stopewatch " in ln and "model" in ln for ln in lines):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.1)
        v2 = model_variant(model, tmp_path / "v2", version="2.0.0", temperature=1.5)
        assert main(["model", "install", str(v2), "--config", str(cfg), "--pid", str(proc.pid)]) == 0
        key = version_key(json.loads((v2 / "model_card.json").read_text()))
        assert (state / "models" / "current").resolve().name == key
        while not any("reloaded: model" in ln for ln in lines):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(30)
    assert proc.returncode == 0


def test_a_card_with_classes_outside_the_vocabulary_is_refused(model, tmp_path):
    classes = json.loads((model / "model_card.json").read_text())["classes"]
    odd = model_variant(model, tmp_path / "odd", classes=[*classes[:-1], "rockburst"])
    with pytest.raises(UserError, match="rockburst.*not in the vocabulary"):
        Classifier(odd)


def _selftest_failing(model: Path, dst: Path) -> Path:
    """The shipped weights under a card whose class order is reversed: valid, loadable, and wrong."""
    card = Classifier(model).card
    return model_variant(model, dst, version="9.9.9", classes=list(reversed(card["classes"])))


def test_a_model_failing_the_selftest_is_refused(tmp_path, model):
    store = ModelStore(tmp_path / "models")
    store.install(model)
    before = os.readlink(store.current)
    with pytest.raises(UserError, match=r"fails the self-test, \d/\d built-in windows right .*--force"):
        store.install(_selftest_failing(model, tmp_path / "wrong"))
    assert os.readlink(store.current) == before


def test_force_installs_it_and_records_why_in_the_card_and_the_journal(tmp_path, model, monkeypatch):
    """The override reaches the journal through a real syslog datagram socket (here the test's own)."""
    import socket

    sock_path = tmp_path / "journal.sock"
    journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    journal.bind(str(sock_path))
    journal.settimeout(10)
    monkeypatch.setenv("STOPEWATCH_JOURNAL_SOCKET", str(sock_path))
    store = ModelStore(tmp_path / "models")
    r = store.install(_selftest_failing(model, tmp_path / "wrong"), force=True)
    assert r.changed and any(w.startswith("forced: self-test") for w in r.warnings)
    installed = json.loads((store.current / "model_card.json").read_text())["installed"]
    assert installed["forced"] and installed["forced"][0].startswith("self-test")
    line = journal.recv(4096).decode()
    journal.close()
    assert line.startswith("<12>stopewatch-model: model install --force") and "self-test" in line  # user.warning


def test_journal_says_false_where_there_is_none(tmp_path):
    from edge.field.model_store import journal

    assert journal("nobody listens", address=str(tmp_path / "no-socket")) is False


def test_a_card_whose_files_entry_disagrees_with_its_sha256_is_refused(tmp_path, model):
    """The card's sha256 is what events and status name: it must be the file's, whatever ``files`` says."""
    good = sha256_file(model / "model.tflite")
    lying = model_variant(model, tmp_path / "lying", sha256="0" * 64, files={"model.tflite": good})
    with pytest.raises(UserError, match="sha256"):
        Classifier(lying)
    with pytest.raises(UserError, match="sha256"):
        ModelStore(tmp_path / "models").install(lying)
    stale = model_variant(model, tmp_path / "stale", files={"model.tflite": "1" * 64})
    with pytest.raises(UserError, match=r"files\.model\.tflite"):
        Classifier(stale)


def test_cli_force_prints_the_override(tmp_path, model, capsys):
    cfg = write_config(tmp_path / "c.toml", tmp_path / "state")
    wrong = _selftest_failing(model, tmp_path / "wrong")
    assert main(["model", "install", str(wrong), "--config", str(cfg), "--no-reload"]) == 2
    assert "self-test" in capsys.readouterr().err
    assert main(["model", "install", str(wrong), "--config", str(cfg), "--no-reload", "--force"]) == 0
    assert "warning: forced: self-test" in capsys.readouterr().out
