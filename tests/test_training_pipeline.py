"""Tiny end-to-end run of `stopewatch train` (real TensorFlow, real tfmot pruning, real int8 conversion,
real LiteRT interpreter), then `evaluate`, `classify` and fine-tuning on the artefacts it wrote."""

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.cli import main
from edge.errors import UserError
from edge.formats import write_windows
from edge.gateway.model import Classifier, read_card, sha256_file

ROOT = Path(__file__).resolve().parents[1]
TINY = """
name = "tiny"
version = "0.0.1"
seed = 3
[data]
channels = 3
train_count = 180
val_count = 60
test_count = 60
heldout_count = 36
heldout_mechanisms_count = 24
crosscheck_count = 24
lowsnr_count = 36
gateway_cut_count = 24
openset_count = 24
mix = {synthetic = 0.6, gateway_cut = 0.2, crosscheck = 0.2}
[train]
epochs = 2
batch_size = 32
outlier_share = 0.2  # outlier exposure runs through the whole pipeline
[prune]
epochs = 2
final_sparsity = 0.6
[quantize]
representative = 24
[open_set]
score = "energy"
[report]
latency_runs = 30
baselines = true
robustness = false
"""

FINETUNE_TINY = """
[finetune]
epochs = 3
batch_size = 16
prune = "masks"
[prune]
final_sparsity = 0.6
[quantize]
representative = 24
[report]
baselines = false
robustness = false
latency_runs = 10
"""

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STOPEWATCH_CACHE", str(root / "cache"))  # generated windows stay in the test's tmp dir
        cfg = root / "tiny.toml"
        cfg.write_text(TINY)
        out = root / "model"
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            rc = main(["train", "--config", str(cfg), "--out", str(out)])
        (root / "train_stdout.txt").write_text(stdout.getvalue())
        (root / "train_rc.txt").write_text(str(rc))
        yield out


def test_train_summary_lists_targets_and_exits_3_when_one_is_missed(trained):
    rc = int((trained.parent / "train_rc.txt").read_text())
    text = (trained.parent / "train_stdout.txt").read_text()
    card = read_card(trained / "model_card.json")
    missed = [k for k, met in card["metrics"]["targets"].items() if met is False]
    assert missed, "a 2-epoch model on 180 windows should miss the in-distribution target"
    assert rc == 3
    lines = text.splitlines()
    n = len(card["metrics"]["targets"])
    # every suite has its macro-F1 and mine-cost lines, the open set its two
    for suite in ("heldout_sites", "heldout_mechanisms", "crosscheck", "lowsnr", "gateway_cut"):
        assert {f"{suite}_macro_f1", f"{suite}_microseismic_recall",
                f"{suite}_microseismic_called_blast"} <= set(card["metrics"]["targets"])
    assert {"openset_unknown_fraction", "openset_known_unknown_fraction"} <= set(card["metrics"]["targets"])
    assert sum(line.strip().startswith(("met ", "MISSED ")) for line in lines) == n
    f1_line = next(line for line in lines if "in-distribution macro-F1" in line)
    assert f1_line.strip().startswith("MISSED") and f"{card['metrics']['test_macro_f1']:.4f}" in f1_line
    assert lines[-1].startswith(f"{n - len(missed)} of {n} targets met; MISSED: ")
    assert set(lines[-1].split("MISSED: ")[1].split(", ")) == set(missed)


def test_artefacts_card_and_hashes(trained):
    for name in ("model.tflite", "model_float.tflite", "model.weights.h5", "model_card.json", "report.md",
                 "report.json", "plots/confusion_test.png", "plots/reliability.png"):
        assert (trained / name).is_file(), name
    card = read_card(trained / "model_card.json")
    assert card["sha256"] == sha256_file(trained / "model.tflite")
    assert card["files"]["model_float.tflite"] == sha256_file(trained / "model_float.tflite")
    assert card["classes"] == ["microseismic", "blast", "drilling", "electrical", "mechanical", "noise"]
    assert (card["fs"], card["channels"], card["samples"]) == (4000.0, 3, 4096)
    assert card["board_rates_hz"] == [2000.0, 20000.0]  # not configured: the 4 kHz family's, from fs
    assert "onset_s" not in card  # the high regime's onset is the daemon's default pre_s
    assert card["temperature"] > 0 and 0 <= card["unknown_threshold"] <= 1
    assert card["sparsity"] >= 0.59  # the configured 0.6, reached by the end step
    assert card["training_data"]["train"]["count"] == 180
    assert "CONV_2D" in card["tflite_ops"]
    for key in ("test_macro_f1", "int8_f1_loss", "ece_after", "int8_latency_ms", "sparsity",
                "test_microseismic_recall", "heldout_sites_nonseismic_called_microseismic", "openset_auroc",
                "gateway_cut_macro_f1", "crosscheck_microseismic_called_blast", "openset_known_unknown_fraction"):
        assert key in card["metrics"]
    rule = card["open_set"]
    assert rule["score"] == "energy" and rule["reject_fraction"] == 0.05
    # the decision bias offsets only the configured classes and never raises the validation cost
    d, bias = card["decision"], card["decision_bias"]
    assert len(bias) == len(card["classes"]) and d["val_cost_after"] <= d["val_cost_before"]
    assert all(b == 0.0 for c, b in zip(card["classes"], bias, strict=True) if c not in ("microseismic", "blast"))
    # the threshold rejects 5 % of the known validation windows through the gateway's own classifier
    from edge.gateway.model import is_unknown
    from training.data import generate
    val = generate(card["training_data"]["val"]["generator"])  # the mixed validation set, regenerated
    assert len(val) == 60 and {"gateway_cut", "crosscheck"} <= {p["source"] for p in
                                                                 card["training_data"]["val"]["generator"]["parts"]}
    clf = Classifier(trained)
    logits = clf.logits_prepared(clf.prepare(val.waveforms, val.fs))
    assert is_unknown(logits, clf.temperature, clf.threshold, clf.open_set).mean() == pytest.approx(0.05, abs=0.02)


def test_int8_input_output_and_float_agreement(trained):
    q, f = Classifier(trained), Classifier(trained / "model_float.tflite")
    assert q.is_quantized and not f.is_quantized
    out = q.interpreter.get_output_details()[0]
    assert np.dtype(out["dtype"]) == np.int8
    assert q._in["quantization"][0] == pytest.approx(q.card["input_quantization"]["scale"])
    from training.data import synthetic
    ws = synthetic(60, 202, "train")  # benchmark windows at the training sites
    x = q.prepare(ws.waveforms, ws.fs)
    lq, lf = q.logits_prepared(x), f.logits_prepared(x)
    spread = lf.max(axis=1) - lf.min(axis=1)
    assert np.median(np.abs(lq - lf).max(axis=1) / spread) < 0.1
    assert np.mean(lq.argmax(1) == lf.argmax(1)) >= 0.9


def test_report_has_spec_keys_and_every_target(trained):
    rep = json.loads((trained / "report.json").read_text())
    for k in ("macro_f1", "accuracy", "balanced_accuracy", "per_class", "confusion", "ece", "by_snr", "by_site"):
        assert k in rep
    assert len(rep["targets"]) == len(read_card(trained / "model_card.json")["metrics"]["targets"])
    assert all(t["measured"] is not None for t in rep["targets"])
    assert set(rep["evaluations"]) >= {"test", "heldout_sites", "heldout_mechanisms", "crosscheck", "lowsnr",
                                       "gateway_cut", "test_vertical_only"}
    # the crosscheck suite holds only the site types training never drew from
    assert not set(rep["evaluations"]["crosscheck"]["int8"]["by_site"]) & set(rep["data"]["train"]["sites"])
    assert set(rep["baselines"]["models"]) == {"logistic_regression", "decision_tree", "naive_bayes", "svm_rbf",
                                               "random_forest"}
    assert rep["open_set"]["n"] == 24
    for k in ("microseismic_recall", "microseismic_called_blast", "nonseismic_called_microseismic"):
        assert 0 <= rep[k] <= 1
        assert all(k in b for b in rep["by_site"].values())
        assert all(k in b for b in rep["by_snr"].values())
    # the shares match the confusion matrix they come from
    cm = np.array(rep["confusion"])
    assert rep["microseismic_called_blast"] == pytest.approx(cm[0, 1] / cm[0].sum())
    assert rep["nonseismic_called_microseismic"] == pytest.approx(cm[1:, 0].sum() / cm[1:].sum())
    scores = rep["open_set"]["scores"]
    assert set(scores) == {"msp", "energy", "max_logit", "mahalanobis"}
    assert all(0 <= s["auroc"] <= 1 and 0 <= s["fpr_at_95_tpr"] <= 1 for s in scores.values())
    assert rep["open_set"]["rule"]["score"] == "energy"
    md = (trained / "report.md").read_text()
    assert "## Targets" in md and ("MISSED" in md or "yes" in md)
    assert "| ms recall | ms -> blast | other -> ms |" in md and "By site (int8)" in md
    assert "| energy (the card's) |" in md


def test_evaluate_cli_with_open_set_family(trained, tmp_path, capsys):
    from training.data import synthetic
    ws = synthetic(30, 99, "all", families=("microseismic", "noise", "rockfall"))
    write_windows(tmp_path / "mixed.npz", ws)
    out = tmp_path / "eval" / "report.json"
    assert main(["evaluate", "--model", str(trained), "--data", str(tmp_path / "mixed.npz"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rep = json.loads(out.read_text())
    assert "mine cost: microseismic recall" in printed and "AUROC" in printed
    assert set(rep["open_set"]["scores"]) == {"msp", "energy", "max_logit"}  # the card's rule is energy
    assert rep["with_unknown"]["score"] == "energy"
    assert rep["open_set"]["family"] == ["rockfall"]
    assert rep["n"] + rep["open_set"]["n"] == 30
    assert (tmp_path / "eval" / "report_confusion.png").is_file()


def test_classify_uses_edge_only_and_prints_one_line_per_window(trained, tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "w.npz", waveforms=rng.standard_normal((5, 1, 2048)).astype(np.float32), fs=2000.0)
    code = ("import sys; from edge.cli import main; rc = main(sys.argv[1:]); "
            "assert 'tensorflow' not in sys.modules and 'training' not in sys.modules, 'loaded TF/training'; "
            "sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, "classify", "--model", str(trained), str(tmp_path / "w.npz")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(lines) == 5  # uniaxial 2 kHz windows: resampled, Z with silent N/E (card policy zero_fill)
    for r in lines:
        assert set(r) == {"label", "confidence", "probabilities", "entropy"}
        assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert 0 <= r["entropy"] <= 1


def test_tampered_model_is_refused(trained, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("model.tflite", "model_card.json"):
        (bad / name).write_bytes((trained / name).read_bytes())
    blob = bytearray((bad / "model.tflite").read_bytes())
    blob[-100] ^= 0xFF
    (bad / "model.tflite").write_bytes(bytes(blob))
    with pytest.raises(UserError, match="sha256"):
        Classifier(bad)
    assert main(["classify", "--model", str(tmp_path / "nowhere"), str(tmp_path / "x.npz")]) == 2


def test_fine_tune_from_a_model_on_site_data(trained, tmp_path):
    from training.data import synthetic
    site = synthetic(96, 77, ["pe-cut-and-fill"])
    write_windows(tmp_path / "site.npz", site)
    out = tmp_path / "ft"
    (tmp_path / "ft.toml").write_text(FINETUNE_TINY.replace('prune = "masks"', 'prune = "reprune"'))
    assert main(["train", "--init", str(trained), "--config", str(tmp_path / "ft.toml"), "--data",
                 str(tmp_path / "site.npz"), "--out", str(out), "--allow-missed"]) == 0
    card = read_card(out / "model_card.json")
    assert card["fine_tuned_from"] == read_card(trained / "model_card.json")["sha256"]
    assert card["adaptation"]["prune"] == "reprune" and card["pruning"]["schedule"] == "constant"
    assert card["sparsity"] >= 0.59  # pruning re-applied at [prune] final_sparsity
    assert card["training_data"]["train"]["sites"] == ["pe-cut-and-fill"]




def test_fine_tune_lp_ft_l2_sp_and_early_stopping(trained):
    """LP-FT trains the head alone first; an L2-SP pull of lr * l2_sp >= 1 puts every kernel back on the
    weights the full fine-tune started from after each step; patience stops on the held-out split and
    restores the best epoch."""
    from edge.gateway.preprocess import PreprocessParams
    from training import adapt as A
    from training import data as D
    from training.config import load_config
    from training.crosscheck import generate_windows

    card = A.card_of(trained)
    params = PreprocessParams.from_dict(card["preprocessing"])
    site = D.prepare(generate_windows(72, 5, fs=params.fs, samples=params.samples, pre_s=0.256,
                                      sites=["grouted_borehole_14hz"]), params, 3, "zero_fill")
    fit, val = D.Prepared(site.x[:54], site.y[:54], None), (site.x[54:], site.y[54:])
    cfg = load_config(None, {"preprocess": card["preprocessing"], "finetune": {
        "epochs": 6, "batch_size": 16, "lp_epochs": 2, "l2_sp": 1000.0, "patience": 1, "augment_copies": 2}})
    base = A.load_base(trained)
    model = A.load_base(trained)
    hist = A.finetune(model, fit, cfg, np.random.default_rng(0), x_val=D.to_model_input(val[0], params.clip),
                      y_val=val[1])
    assert [h["phase"] for h in hist[:2]] == ["finetune-head"] * 2
    full = [h for h in hist if h["phase"] == "finetune" and "loss" in h]
    assert 1 <= len(full) <= 6 and hist[-1]["restored_epoch"] >= 3  # the best epoch is a full fine-tune one
    for a, b in zip(base.layers, model.layers, strict=True):
        if type(a).__name__ == "Conv1D":  # frozen in LP, pulled all the way back in FT
            assert np.array_equal(a.kernel.numpy(), b.kernel.numpy()), a.name
        if type(a).__name__ == "Dense":  # the head moved in LP and stays there
            assert not np.allclose(a.kernel.numpy(), b.kernel.numpy()), a.name


def test_write_adapted_decision_bias_kept_dropped_or_refitted(trained, tmp_path):
    from edge.gateway.preprocess import PreprocessParams
    from training import adapt as A
    from training import data as D
    from training.config import load_config
    from training.crosscheck import generate_windows

    card = A.card_of(trained)
    params = PreprocessParams.from_dict(card["preprocessing"])
    site = D.prepare(generate_windows(48, 6, fs=params.fs, samples=params.samples, pre_s=0.256,
                                      sites=["grouted_borehole_14hz"]), params, 3, "zero_fill")
    x = D.to_model_input(site.x, params.clip)
    model = A.load_base(trained)
    costs = load_config(None, {})["decision"]
    cards = {m: A.write_adapted(tmp_path / m, trained, model, x, {"method": "test"}, (x, site.y), m, costs)
             for m in A.DECISION_BIAS}
    assert cards["keep"]["decision_bias"] == card.get("decision_bias")
    assert "decision_bias" not in cards["none"] and cards["none"]["adaptation"]["decision_bias"] == "none"
    assert cards["refit"]["adaptation"]["decision_bias"] == "re-fitted on 48 labelled site windows"
    assert len(cards["refit"]["decision_bias"]) == 6 and "val_cost_after" in cards["refit"]["decision"]
    for m in A.DECISION_BIAS:
        Classifier(tmp_path / m)  # every variant is a card the gateway reads
    with pytest.raises(UserError, match="refit"):
        A.write_adapted(tmp_path / "x", trained, model, x, {"method": "test"}, None, "refit", costs)


def test_fine_tune_on_reviewed_events_exported_from_the_surface(trained, tmp_path):
    """The loop: events and waveforms in the archive, relabelled by a reviewer, exported, fine-tuned on."""
    import base64

    from surface_support import event_message

    from surface.records import parse_event, parse_waveform
    from surface.store import open_store
    from training.data import synthetic

    site = synthetic(96, 78, ["pe-cut-and-fill"])
    url = f"sqlite:///{tmp_path / 'surface.db'}"
    items = []
    for i, x in enumerate(site.waveforms):
        m = event_message(seq=i + 1, label="unknown", confidence=0.4, fs=site.fs, samples=x.shape[1],
                          channels=tuple(f"ch{c}" for c in range(x.shape[0])))
        w = {"schema": "stopewatch.waveform/1", "event_id": m["event_id"], "site": m["site"], "node": m["node"],
             "boot_id": m["boot_id"], "start": m["window"]["start"], "fs": site.fs, "channels": m["window"]["channels"],
             "samples": x.shape[1], "units": "m/s", "dtype": "float32-le", "encoding": "base64",
             "data": base64.b64encode(x.astype("<f4").tobytes()).decode()}
        items += [parse_event(json.dumps(m).encode(), m["site"], m["node"]),
                  parse_waveform(json.dumps(w).encode(), m["site"], m["node"])]
    with open_store(url) as store:
        store.ingest(items)
        for row in store.review_queue(limit=1000):  # the reviewer names every event's class
            store.relabel(row.event_id, str(site.labels[row.seq - 1]), "ana")
    assert main(["dataset", "export", "--db", url, "--out", str(tmp_path / "reviewed")]) == 0
    (tmp_path / "ft.toml").write_text(FINETUNE_TINY)
    out = tmp_path / "ft"
    assert main(["train", "--init", str(trained), "--config", str(tmp_path / "ft.toml"), "--data",
                 str(tmp_path / "reviewed"), "--out", str(out), "--allow-missed"]) == 0
    card = read_card(out / "model_card.json")
    assert card["fine_tuned_from"] == read_card(trained / "model_card.json")["sha256"]
    trained_on = card["training_data"]["train"]["count"]
    assert 0 < trained_on < 96  # trained on the export, its test and validation windows held out


def _kernels_and_bn(model_dir):
    from training.adapt import load_base
    m = load_base(model_dir)
    kernels = {ly.name: ly.kernel.numpy() for ly in m.layers if type(ly).__name__ in ("Conv1D", "Dense")}
    bn = {ly.name: ly.moving_mean.numpy() for ly in m.layers if ly.name.startswith("bn")}
    return kernels, bn


def test_fine_tune_recipe_keeps_masks_and_records_what_was_done(trained, tmp_path):
    from training.crosscheck import generate_windows
    site = generate_windows(120, 5, fs=4000.0, samples=4096, pre_s=0.256, sites=["grouted_borehole_14hz"])
    write_windows(tmp_path / "site.npz", site)
    (tmp_path / "ft.toml").write_text(FINETUNE_TINY)
    out = tmp_path / "ft"
    assert main(["train", "--init", str(trained), "--config", str(tmp_path / "ft.toml"), "--data",
                 str(tmp_path / "site.npz"), "--out", str(out), "--allow-missed"]) == 0
    card = read_card(out / "model_card.json")
    a = card["adaptation"]
    assert (a["freeze"], a["prune"], a["epochs"], a["adabn"]) == ("none", "masks", 3, True)
    assert a["site_windows"] == card["training_data"]["train"]["count"] < 120  # test and val held out
    assert card["fine_tuned_from"] == read_card(trained / "model_card.json")["sha256"]
    base_k, base_bn = _kernels_and_bn(trained)
    ft_k, ft_bn = _kernels_and_bn(out)
    for name, k in base_k.items():  # every pruned weight is still zero; the others moved
        assert np.all(ft_k[name][k == 0] == 0), name
    assert any(not np.allclose(ft_k[n], base_k[n]) for n in base_k)
    assert not np.allclose(ft_bn["bn0"], base_bn["bn0"])  # BatchNorm statistics re-estimated on the site
    assert card["sparsity"] >= 0.59
    clf = Classifier(out)
    probs = clf.probabilities(site.waveforms[:8], site.fs)
    assert probs.shape == (8, 6) and np.allclose(probs.sum(1), 1, atol=1e-4)


def test_fine_tune_self_trains_on_labelled_and_unlabelled_windows(trained, tmp_path, capsys):
    """--data and --adapt-unlabelled together: pseudo-labels of the unlabelled windows join the fine-tune,
    and the card says how many of each class."""
    from training.crosscheck import generate_windows
    write_windows(tmp_path / "site.npz", generate_windows(72, 5, fs=4000.0, samples=4096, pre_s=0.256,
                                                          sites=["grouted_borehole_14hz"]))
    unl = generate_windows(30, 9, fs=4000.0, samples=4096, pre_s=0.256, sites=["grouted_borehole_14hz"])
    np.savez(tmp_path / "unlabelled.npz", waveforms=unl.waveforms.astype(np.float32), fs=unl.fs)  # no labels
    (tmp_path / "ft.toml").write_text(FINETUNE_TINY.replace(
        'prune = "masks"', 'prune = "masks"\nself_training_rounds = 1\npseudo_per_class = 3\npseudo_confidence = 0.0'))
    out = tmp_path / "st"
    assert main(["train", "--init", str(trained), "--config", str(tmp_path / "ft.toml"), "--data",
                 str(tmp_path / "site.npz"), "--adapt-unlabelled", str(tmp_path / "unlabelled.npz"), "--out", str(out),
                 "--allow-missed"]) == 0
    a = read_card(out / "model_card.json")["adaptation"]
    st = a["self_training"]
    assert a["method"].startswith("self-trained") and st["unlabelled_windows"] == 30 and st["rounds"] == 1
    per_class = st["pseudo_labels_per_class"]
    assert set(per_class) == set(read_card(trained / "model_card.json")["classes"])
    assert 0 < sum(per_class.values()) <= 18 and max(per_class.values()) <= 3  # top 3 of each predicted class
    assert st["by_round"][0]["pseudo_labels"] == per_class
    Classifier(out)
    capsys.readouterr()
    np.savez(tmp_path / "few.npz", waveforms=unl.waveforms[:5].astype(np.float32), fs=unl.fs)
    assert main(["train", "--init", str(trained), "--data", str(tmp_path / "site.npz"), "--adapt-unlabelled",
                 str(tmp_path / "few.npz"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "few.npz" in err and "at least 16" in err


def test_adapt_unlabelled_adabn_int8_and_honest_calibration(trained, tmp_path, capsys):
    from training.adapt import load_base
    from training.crosscheck import generate_windows
    from training.data import prepare, to_model_input
    site = generate_windows(60, 6, fs=8000.0, samples=8192, pre_s=0.256, sites=["vent_shaft_noisy_14hz"])
    np.savez(tmp_path / "unlabelled.npz", waveforms=site.waveforms.astype(np.float32), fs=site.fs)  # no labels
    out = tmp_path / "adapted"
    assert main(["train", "--init", str(trained), "--adapt-unlabelled", str(tmp_path / "unlabelled.npz"),
                 "--out", str(out)]) == 0
    base = read_card(trained / "model_card.json")
    card = read_card(out / "model_card.json")
    a = card["adaptation"]
    assert a["site_windows"] == 60 and a["labels_used"] == "none"
    assert a["calibration"].startswith("source domain")
    assert card["temperature"] == base["temperature"] and card["unknown_threshold"] == base["unknown_threshold"]
    assert card["fine_tuned_from"] == base["sha256"] and card["metrics"] == {}
    assert card["sparsity"] == pytest.approx(base["sparsity"], abs=1e-9)  # AdaBN leaves the kernels alone
    # the stored BatchNorm statistics are those of the site windows
    from edge.gateway.preprocess import PreprocessParams
    params = PreprocessParams.from_dict(card["preprocessing"])
    x = to_model_input(prepare(site, params, 3, "zero_fill").x, params.clip)
    m = load_base(out)
    import tf_keras
    z = np.asarray(tf_keras.Model(m.input, m.get_layer("conv0").output)(x, training=False))
    assert np.allclose(m.get_layer("bn0").moving_mean.numpy(), z.reshape(-1, z.shape[-1]).mean(0), rtol=1e-3,
                       atol=1e-5)
    clf = Classifier(out)
    assert clf.is_quantized
    assert len(clf.classify(site.waveforms[:4], site.fs)) == 4
    # labelled windows: calibration re-fitted on them, and the card says so
    labelled = generate_windows(36, 7, fs=4000.0, samples=4096, pre_s=0.256, sites=["vent_shaft_noisy_14hz"])
    write_windows(tmp_path / "labelled.npz", labelled)
    assert main(["train", "--init", str(trained), "--adapt-unlabelled", str(tmp_path / "labelled.npz"),
                 "--out", str(tmp_path / "cal")]) == 0
    cal = read_card(tmp_path / "cal" / "model_card.json")
    assert cal["adaptation"]["calibration"].startswith("temperature and unknown threshold re-fitted on 36")
    assert cal["temperature"] != base["temperature"]
    capsys.readouterr()
    assert main(["train", "--adapt-unlabelled", str(tmp_path / "unlabelled.npz"), "--out", str(tmp_path / "x")]) == 2
    assert "--init" in capsys.readouterr().err


def test_train_user_errors_are_one_line(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nepochs = 0\n")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.epochs" in err
    assert main(["train", "--init", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
