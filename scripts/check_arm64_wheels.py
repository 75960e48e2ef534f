"""Check that the gateway extra installs from wheels alone on Linux aarch64 (Raspberry Pi OS 64-bit / Debian 12).

Resolves the core dependencies plus `.[edge]` from pyproject.toml for CPython 3.11 and 3.13 on manylinux
aarch64 up to glibc 2.36 (Debian 12), with pip's platform options and --only-binary=:all:, so pip fails if
anything would need building from source on the gateway, and checks that the ai-edge-litert it resolves is
one the pin admits (the pin excludes the releases that crash on the Pi's CPUs: see scripts/arm64_selftest.py).
Needs network access to PyPI. Writes
bench/results/arm64_wheels.json (the wheel chosen for every package, per Python).

    python scripts/check_arm64_wheels.py [--python 3.11 3.13] [--extra edge]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
GLIBC_MAX = 36  # Debian 12 / Raspberry Pi OS bookworm ship glibc 2.36
PLATFORMS = ["manylinux2014_aarch64"] + [f"manylinux_2_{m}_aarch64" for m in range(17, GLIBC_MAX + 1)]


def requirements(extra: str) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return list(project["dependencies"]) + list(project["optional-dependencies"][extra])


def resolve(reqs: list[str], python: str) -> tuple[bool, dict, str]:
    """(ok, {package: wheel file}, pip's error text) for one Python version."""
    abi = "cp" + python.replace(".", "")
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        argv = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed",
                "--only-binary=:all:", "--target", str(Path(tmp) / "t"), "--python-version", python,
                "--implementation", "cp", "--abi", abi, "--abi", "abi3", "--abi", "none",
                "--report", str(report), *[a for p in PLATFORMS for a in ("--platform", p)], *reqs]
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            return False, {}, (done.stderr or done.stdout).strip()
        data = json.loads(report.read_text())
    wheels = {item["metadata"]["name"]: item["download_info"]["url"].rsplit("/", 1)[-1] for item in data["install"]}
    not_wheels = {k: v for k, v in wheels.items() if not v.endswith(".whl")}
    return not not_wheels, wheels, f"not wheels: {not_wheels}" if not_wheels else ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", nargs="+", default=["3.11", "3.13"])
    ap.add_argument("--extra", default="edge")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "arm64_wheels.json"))
    args = ap.parse_args()
    reqs = requirements(args.extra)
    result = {"requirements": reqs, "platforms": PLATFORMS, "python": {}}
    pin = next((Requirement(r).specifier for r in reqs if Requirement(r).name == "ai-edge-litert"), None)
    failed = False
    for py in args.python:
        ok, wheels, err = resolve(reqs, py)
        litert = wheels.get("ai-edge-litert", "").split("-")
        if ok and pin is not None and (len(litert) < 2 or litert[1] not in pin):
            ok, err = False, f"resolved ai-edge-litert {litert[1:2]} is not admitted by the pin {pin}"
        failed |= not ok
        result["python"][py] = {"ok": ok, "wheels": wheels, "error": err}
        print(f"Python {py} aarch64: {'OK' if ok else 'FAIL'}")
        for name, wheel in sorted(wheels.items()):
            print(f"  {name:<16} {wheel}")
        if err:
            print("  " + err.replace("\n", "\n  "))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
