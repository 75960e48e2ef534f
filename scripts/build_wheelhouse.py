"""Build the offline wheelhouse: the project's wheel and every gateway dependency's wheels, for each target.

One directory a technician carries to a gateway with no network and installs from with
``pip install --no-index --find-links WHEELHOUSE 'stopewatch[edge]'``. The project's wheel is built first,
then ``pip download --only-binary=:all:`` resolves ``stopewatch[edge]`` from that wheel's own metadata for every
(platform, Python) pair, so the directory holds exactly what such an install asks for and nothing is ever
compiled on the gateway. Targets: Linux aarch64 (Raspberry Pi OS / Debian 12 arm64) and x86_64, manylinux
up to glibc 2.36, CPython 3.11 and 3.13. Needs PyPI while building; writes WHEELHOUSE/MANIFEST.txt.

    python scripts/build_wheelhouse.py [--out dist/wheelhouse] [--arch aarch64 x86_64] [--python 3.11 3.13]
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GLIBC_MAX = 36  # Debian 12 / Raspberry Pi OS bookworm ship glibc 2.36


def platforms(arch: str) -> list[str]:
    """pip platform tags a Debian 12 machine of ``arch`` accepts, manylinux2014 up to glibc 2.36."""
    return [f"manylinux2014_{arch}"] + [f"manylinux_2_{m}_{arch}" for m in range(17, GLIBC_MAX + 1)]


def build_project_wheel(out: Path) -> Path:
    """Build the project's wheel into ``out`` (pip's isolated build with pyproject's build requirements)."""
    for old in out.glob("stopewatch-*.whl"):
        old.unlink()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out),
                    str(ROOT)], check=True)
    (wheel,) = out.glob("stopewatch-*.whl")
    return wheel


def download(out: Path, wheel: Path, arch: str, python: str, extra: str) -> None:
    """Download every wheel ``stopewatch[extra]`` needs on (arch, python) into ``out``; fails if one is missing."""
    abi = "cp" + python.replace(".", "")
    argv = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--dest", str(out),
            "--find-links", str(out), "--python-version", python, "--implementation", "cp",
            "--abi", abi, "--abi", "abi3", "--abi", "none", *[a for p in platforms(arch) for a in ("--platform", p)],
            f"stopewatch[{extra}]=={wheel.name.split('-')[1]}"]
    subprocess.run(argv, check=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "dist" / "wheelhouse"))
    ap.add_argument("--arch", nargs="+", default=["aarch64", "x86_64"])
    ap.add_argument("--python", nargs="+", default=["3.11", "3.13"])
    ap.add_argument("--extra", default="edge", help="the project's extra to bring (the gateway: edge)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wheel = build_project_wheel(out)
    print(f"built {wheel.name}")
    for arch in args.arch:
        for py in args.python:
            try:
                download(out, wheel, arch, py, args.extra)
            except subprocess.CalledProcessError:
                print(f"no complete set of wheels for Linux {arch}, Python {py} (pip's error above)", file=sys.stderr)
                return 1
            print(f"Linux {arch}, Python {py}: complete")
    files = sorted(p for p in out.iterdir() if p.suffix == ".whl")
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}" for p in files]
    (out / "MANIFEST.txt").write_text("\n".join(lines) + "\n")
    size = sum(p.stat().st_size for p in files) / 1e6
    print(f"{out}: {len(files)} wheels, {size:.0f} MB (sha256 in MANIFEST.txt)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
