"""The gateway self-test on a Debian 12 arm64 userland under qemu-user, per emulated CPU and ai-edge-litert release.

For every ai-edge-litert release that pyproject's pin admits (or ``--spec``) and every CPU model gateways have
(``QEMU_CPU=cortex-a53``: Pi 3 / Zero 2, ``cortex-a72``: Pi 4, ``cortex-a76``: Pi 5), runs
``stopewatch model test MODEL --json`` for each shipped model with Debian's own arm64 Python (3.11 from Debian 12,
the default; ``--python 3.13`` from Debian 13):

  1. ``debootstrap --foreign --arch=arm64 bookworm`` (or trixie) and every downloaded package unpacked with
     ``dpkg-deb -x``: a sysroot that needs no binfmt_misc, chroot or second stage (``qemu-aarch64-static -L ROOT``);
  2. pip (on the host) installs the gateway's aarch64 manylinux wheels into one site directory per release,
     ``--only-binary=:all:`` (nothing is built), reused on later runs;
  3. each (CPU, release, model) run records right/total and the emulated ms per window, or how it died.

Emulated time shows relative cost, not a real Pi's speed (qemu-user translates every instruction).
Needs debootstrap and qemu-user-static (``apt-get install debootstrap qemu-user-static``), a Debian mirror and
PyPI. Writes bench/results/arm64_selftest.json and prints the field guide's table.

    python scripts/arm64_selftest.py [--root DIR] [--cpus cortex-a53 ...] [--spec '>=1.2,<3'] [--versions 1.4.0 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
CPUS = ["cortex-a53", "cortex-a72", "cortex-a76"]
# Debian's arm64 userland per Python: (suite, name, glibc minor: the newest manylinux tag it runs).
DEBIAN = {"3.11": ("bookworm", "Debian 12", 36), "3.13": ("trixie", "Debian 13", 41)}


def platforms(python: str) -> list[str]:
    """pip platform tags the Debian release of ``python`` accepts."""
    return ["manylinux2014_aarch64"] + [f"manylinux_2_{m}_aarch64" for m in range(17, DEBIAN[python][2] + 1)]
MIRROR = os.environ.get("MIRROR", "http://deb.debian.org/debian")


def gateway_requirements() -> list[str]:
    """The core dependencies plus the ``edge`` extra, as pyproject.toml states them."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return list(project["dependencies"]) + list(project["optional-dependencies"]["edge"])


def litert_spec(reqs: list[str]) -> SpecifierSet:
    """The ai-edge-litert specifier of the gateway requirements."""
    for r in reqs:
        req = Requirement(r)
        if req.name == "ai-edge-litert":
            return req.specifier
    raise SystemExit("pyproject.toml: no ai-edge-litert requirement in the edge extra")


def released_versions(spec: SpecifierSet) -> list[str]:
    """Every ai-edge-litert release on the index that ``spec`` admits, oldest first."""
    done = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "ai-edge-litert"],
                          capture_output=True, text=True, check=True)
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("Available versions:"))
    found = [v.strip() for v in line.split(":", 1)[1].split(",")]
    return sorted((v for v in found if Version(v) in spec), key=Version)


def ensure_rootfs(root: Path, python: str) -> None:
    """A Debian arm64 sysroot with ``python`` at ``root`` (made once)."""
    if (root / f"usr/bin/python{python}").exists():
        return
    for tool in ("debootstrap", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise SystemExit(f"missing {tool}: apt-get install debootstrap qemu-user-static")
    print(f"== debootstrap {DEBIAN[python][1]} arm64 into {root}", flush=True)
    subprocess.run(["debootstrap", "--foreign", "--arch=arm64", "--variant=minbase",
                    "--include=python3,ca-certificates", DEBIAN[python][0], str(root), MIRROR],
                   check=True, stdout=subprocess.DEVNULL)
    for deb in sorted((root / "var/cache/apt/archives").glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)


def ensure_site(root: Path, reqs: list[str], version: str, python: str) -> tuple[Path | None, str]:
    """(site directory with the gateway's aarch64 wheels and ai-edge-litert==version, pip's error or '')."""
    site = root / "opt" / "stopewatch" / f"site-{version}"  # one sysroot per Python: no clash
    if (site / "ai_edge_litert").is_dir():
        return site, ""
    others = [r for r in reqs if Requirement(r).name != "ai-edge-litert"]
    argv = [sys.executable, "-m", "pip", "install", "--quiet", "--only-binary=:all:", "--target", str(site),
            "--python-version", python, "--implementation", "cp", "--abi", "cp" + python.replace(".", ""),
            "--abi", "abi3", "--abi", "none", *[a for p in platforms(python) for a in ("--platform", p)], *others,
            f"ai-edge-litert=={version}"]
    print(f"== aarch64 wheels with ai-edge-litert {version} into {site}", flush=True)
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(site, ignore_errors=True)
        return None, (done.stderr or done.stdout).strip().splitlines()[-1]
    return site, ""


def copy_tree(root: Path) -> list[Path]:
    """The gateway source and the shipped models inside the sysroot; returns the model directories."""
    dest = root / "opt" / "stopewatch"
    for pkg in ("edge", "firmware_bridge"):
        shutil.rmtree(dest / "src" / pkg, ignore_errors=True)
        shutil.copytree(ROOT / pkg, dest / "src" / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    models = []
    for card in sorted(ROOT.glob("models/*/model_card.json")):
        m = dest / "models" / card.parent.name
        m.mkdir(parents=True, exist_ok=True)
        for name in ("model.tflite", "model_card.json"):
            shutil.copy2(card.parent / name, m / name)
        models.append(m)
    return models


# One emulated interpreter runs `stopewatch model test MODEL --json` for several models in turn (emulated start-up
# costs about as much as a self-test); a marker before each model says which one a crash belongs to.
DRIVER = """
import contextlib, io, sys
from edge.cli import main
for model in sys.argv[1:]:
    print("@@model", model, flush=True)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["model", "test", model, "--json"])
    print("@@result", rc, out.getvalue().strip().splitlines()[-1], flush=True)
"""


def run_models(qemu: str, root: Path, site: Path, cpu: str, models: list[Path], timeout: float,
               python: str) -> list[dict]:
    """The self-test of each model under ``QEMU_CPU=cpu``: its result, or how the emulated process died.

    After a crash the models not yet tested run in a fresh process, so every model gets its own outcome.
    """
    env = dict(os.environ, QEMU_CPU=cpu, PYTHONDONTWRITEBYTECODE="1",
               PYTHONPATH=f"{root / 'opt/stopewatch/src'}:{site}")
    rows: list[dict] = []
    todo = list(models)
    while todo:
        argv = [qemu, "-L", str(root), str(root / f"usr/bin/python{python}"), "-c", DRIVER, *map(str, todo)]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            rows += [{"model": m.name, "outcome": f"timeout after {timeout:.0f} s"} for m in todo]
            return rows
        current = None
        for line in done.stdout.splitlines():
            if line.startswith("@@model "):
                current = Path(line.split(" ", 1)[1])
            elif line.startswith("@@result ") and current is not None:
                _, rc, payload = line.split(" ", 2)
                result = json.loads(payload)
                rows.append({"model": current.name, "outcome": "ran", "right": result["right"],
                             "total": result["total"], "ms_per_window": result["ms_per_window"], "rc": int(rc)})
                todo.remove(current)
                current = None
        if done.returncode == 0 and not todo:
            return rows
        # qemu dies of the guest's fatal signal (-n from subprocess).
        rc = done.returncode
        sig = -rc if rc < 0 else rc - 128 if rc > 128 else 0
        what = f"crashed ({signal.Signals(sig).name})" if sig in {s.value for s in signal.Signals} else f"exit {rc}"
        tail = (done.stderr.strip().splitlines() or [""])[-1][:200]
        if current is None:  # died before or between models: the rest share the outcome
            rows += [{"model": m.name, "outcome": what, "rc": rc, "stderr_tail": tail} for m in todo]
            return rows
        rows.append({"model": current.name, "outcome": what, "rc": rc, "stderr_tail": tail})
        todo.remove(current)
    return rows


def table(rows: list[dict], cpus: list[str], versions: list[str]) -> str:
    """Markdown: one row per release, one column per CPU; each cell sums the models (right/total, ms/window)."""
    head = "| ai-edge-litert | " + " | ".join(f"`{c}`" for c in cpus) + " |"
    lines = [head, "|" + " --- |" * (len(cpus) + 1)]
    for v in versions:
        cells = []
        for c in cpus:
            mine = [r for r in rows if r["cpu"] == c and r["litert"] == v]
            ran = [r for r in mine if r["outcome"] == "ran"]
            if mine and len(ran) == len(mine):
                right = sum(r["right"] for r in ran)
                total = sum(r["total"] for r in ran)
                ms = " / ".join(f"{r['ms_per_window']:.0f}" for r in ran)
                cells.append(f"{right}/{total}, {ms} ms")
            elif mine:
                cells.append(", ".join(sorted({r["outcome"] for r in mine if r["outcome"] != "ran"})))
            else:
                cells.append("not run")
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", help="the arm64 sysroot (made once, reused; default /var/tmp/stopewatch-arm64[-3.13])")
    ap.add_argument("--python", default="3.11", choices=sorted(DEBIAN), help="Debian's arm64 Python to run")
    ap.add_argument("--cpus", nargs="+", default=CPUS, help="qemu CPU models (QEMU_CPU)")
    ap.add_argument("--spec", help="ai-edge-litert releases to test (default: the pin in pyproject.toml)")
    ap.add_argument("--versions", nargs="+", help="exact releases instead of every one --spec admits")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per emulated run")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "arm64_selftest.json"))
    args = ap.parse_args()
    qemu = shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")
    if qemu is None:
        raise SystemExit("missing qemu-aarch64: apt-get install qemu-user-static")
    root = Path(args.root or ("/var/tmp/stopewatch-arm64" + ("" if args.python == "3.11" else f"-{args.python}")))
    reqs = gateway_requirements()
    spec = SpecifierSet(args.spec) if args.spec else litert_spec(reqs)
    versions = args.versions or released_versions(spec)
    ensure_rootfs(root, args.python)
    models = copy_tree(root)
    if not models:
        raise SystemExit("no models to test: models/*/model_card.json")
    qemu_version = subprocess.run([qemu, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    rows: list[dict] = []
    for v in versions:
        site, err = ensure_site(root, reqs, v, args.python)
        for cpu in args.cpus:
            if site is None:
                rows += [{"cpu": cpu, "litert": v, "model": m.name, "outcome": "no aarch64 wheel", "error": err}
                         for m in models]
                continue
            for row in run_models(qemu, root, site, cpu, models, args.timeout, args.python):
                rows.append({"cpu": cpu, "litert": v, **row})
                got = (f"{row['right']}/{row['total']} right, {row['ms_per_window']:.1f} ms per window"
                       if row["outcome"] == "ran" else row["outcome"])
                print(f"{cpu:<11} ai-edge-litert {v:<6} {row['model']:<17} {got}", flush=True)
    out = {"userland": f"{DEBIAN[args.python][1]} arm64 (debootstrap), Python {args.python}, under qemu-user",
           "qemu": re.sub(r"\s+", " ", qemu_version), "host": f"{platform.machine()} {os.cpu_count()} cores",
           "spec": str(spec), "versions": versions, "cpus": args.cpus, "models": [m.name for m in models],
           "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}\n")
    print("Per cell: right/total over " + ", ".join(m.name for m in models) + "; emulated ms per window of each.")
    print(table(rows, args.cpus, versions))
    ok = all(r["outcome"] == "ran" and r["right"] == r["total"] for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
