#!/usr/bin/env bash
# The gateway self-test on a real Debian 12 arm64 userland, emulated with qemu-user (not in the default test
# run: it downloads ~100 MB and emulation is slow).
#
#   1. debootstrap --foreign --arch=arm64 bookworm (Debian's own arm64 python3.11 and libc), and unpack every
#      downloaded package with dpkg-deb -x: a sysroot that needs no binfmt_misc, chroot or second stage;
#   2. pip (on the host) installs the gateway extra's aarch64 manylinux wheels into a target directory,
#      --only-binary=:all: (nothing is built);
#   3. qemu-aarch64-static -L ROOT runs that arm64 python3.11 on `stopewatch model test` for each shipped
#      model: the built-in test windows must all be classified right; the emulated time per window is reported.
#
# Needs: debootstrap, qemu-user-static (apt-get install debootstrap qemu-user-static), network to a Debian
# mirror and to PyPI. Writes bench/results/arm64_selftest.json.
#   scripts/arm64_selftest.sh [ROOT_DIR]      (default /var/tmp/stopewatch-arm64; reused when present)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
ROOT=${1:-/var/tmp/stopewatch-arm64}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
PY=${PYTHON:-.venv/bin/python}
QEMU=$(command -v qemu-aarch64-static || command -v qemu-aarch64 || true)
for tool in debootstrap dpkg-deb; do
    command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install debootstrap qemu-user-static" >&2; exit 2; }
done
[ -n "$QEMU" ] || { echo "missing qemu-aarch64: apt-get install qemu-user-static" >&2; exit 2; }

if [ ! -x "$ROOT/usr/bin/python3.11" ]; then
    echo "== debootstrap Debian 12 arm64 into $ROOT"
    debootstrap --foreign --arch=arm64 --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$ROOT" "$MIRROR" >/dev/null
    for deb in "$ROOT"/var/cache/apt/archives/*.deb; do dpkg-deb -x "$deb" "$ROOT"; done
fi
echo "== arm64 userland: $(file -b "$ROOT/usr/bin/python3.11" | cut -d, -f1-2)"

# LITERT=ai-edge-litert==1.4.0 pins the interpreter (one site directory per pin).
SITE="$ROOT/opt/stopewatch/site${LITERT:+-${LITERT//[^0-9.]/}}"
if [ ! -d "$SITE/ai_edge_litert" ]; then
    echo "== aarch64 wheels of .[edge] into $SITE"
    REQS=$("$PY" -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(p["dependencies"] + p["optional-dependencies"]["edge"]))')
    PLATS=(--platform manylinux2014_aarch64)
    for m in $(seq 17 36); do PLATS+=(--platform "manylinux_2_${m}_aarch64"); done
    # shellcheck disable=SC2086
    "$PY" -m pip install --quiet --only-binary=:all: --target "$SITE" --python-version 3.11 --implementation cp \
        --abi cp311 --abi abi3 --abi none "${PLATS[@]}" $REQS ${LITERT:-}
fi
mkdir -p "$ROOT/opt/stopewatch/src"
cp -r edge firmware_bridge "$ROOT/opt/stopewatch/src/"
mkdir -p "$ROOT/opt/stopewatch/models"
for m in models/*/; do [ -f "$m/model_card.json" ] && cp -r "$m" "$ROOT/opt/stopewatch/models/"; done
MODELS=$(ls -d "$ROOT"/opt/stopewatch/models/*/ 2>/dev/null || true)
if [ -z "$MODELS" ] && [ -n "${MODEL:-}" ]; then cp -r "$MODEL" "$ROOT/opt/stopewatch/models/"; fi

arm64() {  # run the Debian arm64 python3.11 under qemu with the sysroot as its root
    PYTHONPATH="$ROOT/opt/stopewatch/src:$SITE" PYTHONDONTWRITEBYTECODE=1 \
        "$QEMU" -L "$ROOT" "$ROOT/usr/bin/python3.11" "$@"
}
arm64 -c 'import platform, sys; from importlib.metadata import version as v
print("== emulated:", platform.machine(), "Python", sys.version.split()[0], "ai-edge-litert", v("ai-edge-litert"))'
status=0
RESULTS=()
for m in "$ROOT"/opt/stopewatch/models/*/; do
    echo "== stopewatch model test $(basename "$m") (emulated aarch64)"
    arm64 -m edge.cli model test "$m" || status=1
    RESULTS+=("$(arm64 -m edge.cli model test "$m" --json 2>/dev/null | tail -1)")
done
[ ${#RESULTS[@]} -gt 0 ] || { echo "no models to test (models/*/ or MODEL=DIR)" >&2; exit 2; }
printf '%s\n' "${RESULTS[@]}" | "$PY" -c '
import json, sys
rows = [json.loads(line) for line in sys.stdin if line.strip()]
out = {"userland": "Debian 12 arm64 (debootstrap) under qemu-user", "host": sys.argv[1], "litert": sys.argv[2],
       "results": rows}
open("bench/results/arm64_selftest.json", "w").write(json.dumps(out, indent=1) + "\n")
print("wrote bench/results/arm64_selftest.json")' "$(uname -m) $(nproc) cores" "${LITERT:-as resolved}"
exit $status
