"""The offline install: `make wheelhouse`'s builder for this host's platform, then a clean venv installs
`stopewatch[edge]` from it with no index and runs the self-test on a shipped model; and the project's wheel
builds with the lowest setuptools pyproject asks for.

Both need PyPI while building (the wheelhouse is downloaded, the old setuptools fetched) and are skipped,
saying so, where it cannot be reached.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HOST_PY = f"{sys.version_info.major}.{sys.version_info.minor}"

pytestmark = pytest.mark.slow


def _clean_env() -> dict:
    """The environment without this checkout on the path (the venv must use what it installed)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PIP_FIND_LINKS")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


@pytest.fixture(scope="module")
def pypi(tmp_path_factory) -> None:
    probe = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest",
                            str(tmp_path_factory.mktemp("probe")), "pyserial==3.5"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"PyPI not reachable, cannot build the wheelhouse: {probe.stderr.strip().splitlines()[-1:]}")


def _venv(path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(path)], check=True, env=_clean_env())
    return path / "bin" / "python"


def test_offline_install_from_the_wheelhouse_runs_the_selftest(pypi, tmp_path):
    house = tmp_path / "wheelhouse"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_wheelhouse.py"), "--out", str(house),
                    "--arch", platform.machine(), "--python", HOST_PY], check=True, env=_clean_env())
    names = {p.name for p in house.glob("*.whl")}
    assert any(n.startswith("stopewatch-") for n in names)
    assert any(n.startswith("ai_edge_litert-") for n in names)
    assert not any(n.startswith("tensorflow") for n in names), "the gateway never needs TensorFlow"
    manifest = (house / "MANIFEST.txt").read_text().split()
    assert set(manifest[1::2]) == names

    py = _venv(tmp_path / "gw")
    # No index at all: every wheel must come from the directory.
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--no-index", "--find-links", str(house),
                    "stopewatch[edge]"], check=True, env=_clean_env(), cwd=tmp_path)
    prefix = tmp_path / "gw"
    model = prefix / "share" / "stopewatch" / "models" / "triaxial"
    assert (model / "model.tflite").is_file(), "the wheel carries the shipped models"
    done = subprocess.run([str(prefix / "bin" / "stopewatch"), "model", "test", str(model)], capture_output=True,
                          text=True, env=_clean_env(), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^(\d+)/\1 right", done.stdout, re.M), done.stdout
    where = subprocess.run([str(py), "-c", "import edge, importlib.util as u; print(edge.__file__); "
                            "print(u.find_spec('tensorflow') is None)"], capture_output=True, text=True,
                           env=_clean_env(), cwd=tmp_path, check=True).stdout.split()
    assert where[0].startswith(str(prefix)), "the self-test ran the installed package, not the checkout"
    assert where[1] == "True"


def test_wheel_builds_with_the_lowest_setuptools_claimed(pypi, tmp_path):
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    (lowest,) = [r for r in requires if r.startswith("setuptools")]
    pin = re.fullmatch(r"setuptools>=([\d.]+)", lowest)
    assert pin, f"build requirement {lowest!r}: expected setuptools>=X"
    py = _venv(tmp_path / "build")
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", f"setuptools=={pin[1]}"], check=True,
                   env=_clean_env())
    subprocess.run([str(py), "-m", "pip", "uninstall", "--quiet", "--yes", "wheel"], env=_clean_env())
    # Without isolation: exactly the claimed setuptools and nothing else builds it.
    subprocess.run([str(py), "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir",
                    str(tmp_path / "out"), str(ROOT)], check=True, env=_clean_env(), cwd=tmp_path)
    (wheel,) = (tmp_path / "out").glob("stopewatch-*.whl")
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith("dist-info/WHEEL"))).decode()
        names = z.namelist()
    assert f"Generator: setuptools ({pin[1]})" in meta
    assert any(n.endswith("share/stopewatch/models/triaxial/model.tflite") for n in names)
