"""Write edge/field/selftest/windows.npz: the built-in labelled test windows of `stopewatch doctor` and
`stopewatch model test` (one clear, high-SNR window per class from the synthetic benchmark).

The gateway has no training code, so the windows ship as package data. They are a canary for "this
model, this interpreter and this preprocessing work on this machine", not an accuracy figure: a window
is kept only when every shipped model classifies it right with a wide margin, so a healthy model on a
healthy gateway always passes and a broken install (wrong model, altered preprocessing, faulty
interpreter build) does not.

    .venv/bin/python scripts/make_selftest_windows.py [MODEL_DIR ...]   (default: models/*/)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.gateway.model import Classifier  # noqa: E402
from edge.vocabulary import CLASSES  # noqa: E402
from training.synthetic.generate import generate_windows  # noqa: E402

SEED = 20251126
CANDIDATES = 120  # 20 per class
MIN_CONFIDENCE = 0.9
NOISE_COUNTS = 20.0  # background of ~20 counts rms, integer counts as a high-gain board sends them


def main(argv: list[str]) -> int:
    model_dirs = [Path(a) for a in argv] or sorted(p.parent for p in (ROOT / "models").glob("*/model_card.json"))
    if not model_dirs:
        print("no models: pass model directories or train models/triaxial first", file=sys.stderr)
        return 2
    models = [Classifier(d) for d in model_dirs]
    ws = generate_windows(CANDIDATES, SEED, snr_db=(20.0, 30.0))
    # Integer counts compress well and look like what the board sends; the model normalises the scale away.
    noise_rms = np.median(np.sqrt(np.mean(ws.waveforms[:, :, :512] ** 2, axis=(1, 2))))
    counts = np.rint(ws.waveforms * (NOISE_COUNTS / noise_rms)).astype(np.float32)
    ok = np.ones(len(ws), bool)
    for clf in models:
        x = counts if clf.channels == 3 else counts[:, :1]
        for i, r in enumerate(clf.classify(x, ws.fs)):
            ok[i] &= r.label == ws.labels[i] and r.confidence >= MIN_CONFIDENCE
    pick = []
    for c in CLASSES:
        idx = np.flatnonzero(ok & (ws.labels == c))
        if not len(idx):
            print(f"no {c} window passes every model; raise CANDIDATES", file=sys.stderr)
            return 1
        pick.append(int(idx[0]))
    out = ROOT / "edge" / "field" / "selftest" / "windows.npz"
    np.savez_compressed(out, waveforms=counts[pick], labels=np.asarray(ws.labels[pick], dtype=str),
                        fs=np.float64(ws.fs), snr_db=ws.snr_db[pick].astype(np.float32),
                        site=np.asarray(ws.site[pick], dtype=str), units=np.asarray("counts"),
                        provenance=np.asarray(f"generate_windows({CANDIDATES}, seed={SEED}, snr_db=(20, 30)) "
                                              f"windows {pick}; kept if right with confidence >= "
                                              f"{MIN_CONFIDENCE} by {', '.join(m.card['name'] for m in models)}"))
    print(f"wrote {out} ({out.stat().st_size} bytes): windows {pick}, "
          f"{int(ok.sum())}/{len(ok)} candidates passed {len(models)} model(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
