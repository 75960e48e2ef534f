"""Command-line value types that refuse nonsense before any work starts.

argparse calls these on each option's text; a refusal becomes argparse's one line
``argument --fs: ...`` and exit 2, so a NaN rate, a negative duration or a board id the
frame header cannot carry never reaches the code that would crash on it or, worse,
run and produce nothing.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from pathlib import Path

from edge.vocabulary import CLASSES

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # an instance name: a file name and a unit name part


def _range_text(lo: float | None, hi: float | None, lo_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"above {lo:g} and at most {hi:g}" if lo_open else f"from {lo:g} to {hi:g}"
    if lo is not None:
        return f"above {lo:g}" if lo_open else f"at least {lo:g}"
    return f"at most {hi:g}"


def number(lo: float | None = None, hi: float | None = None, *, integer: bool = False,
           lo_open: bool = False, unit: str = "") -> Callable[[str], float | int]:
    """An argparse type: a finite number (an integer with ``integer``) in ``[lo, hi]`` (``(lo, hi]`` with
    ``lo_open``); the refusal names the value and the allowed range."""
    kind = "an integer" if integer else "a number"
    allowed = f"{kind} {_range_text(lo, hi, lo_open)}" + (f" ({unit})" if unit else "")

    def parse(text: str) -> float | int:
        try:
            value: float | int = int(text) if integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}; expected {allowed}") from None
        if not math.isfinite(value) or (lo is not None and (value <= lo if lo_open else value < lo)) \
                or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"{text!r}; expected {allowed}")
        return value

    parse.__name__ = "integer" if integer else "number"  # argparse names the type in some messages
    return parse


def classes(text: str) -> str:
    """An argparse type: comma-separated event classes of the vocabulary (at least one)."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in CLASSES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"{text!r}: {', '.join(bad) or 'no class'} is not a class; "
                                         f"allowed: {', '.join(CLASSES)}")
    return text


def instance(text: str) -> str:
    """An argparse type: a daemon instance name (it becomes /etc/stopewatch/NAME.toml and stopewatch@NAME)."""
    if not _NAME.match(text):
        raise argparse.ArgumentTypeError(f"{text!r}; expected 1-64 letters, digits, '.', '_' or '-', "
                                         "starting with a letter or digit (it becomes a file and unit name)")
    return text


def out_file(text: str) -> str:
    """An argparse type: a file to write, whose directory exists (refused before any work is done)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a directory; expected a file name")
    parent = path.parent
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r}: no directory {str(parent)!r} to write it in")
    return text


def out_dir(text: str) -> str:
    """An argparse type: a directory to write into, existing or creatable under an existing directory."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} exists and is not a directory")
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r}: {str(probe)!r} is not a directory")
    return text


def out_file_in_new_dirs(text: str) -> str:
    """An argparse type: a file to write, whose missing directories the command creates (its nearest
    existing ancestor must be a directory)."""
    if Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a directory; expected a file name")
    probe = Path(text).parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r}: {str(probe)!r} is not a directory")
    return text


def out_path(text: str) -> str:
    """An argparse type: a file or a directory to write (either may exist), under an existing directory."""
    probe = Path(text)
    while not probe.exists():
        probe = probe.parent
    if probe != Path(text) and not probe.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r}: {str(probe)!r} is not a directory")
    return text


def in_file(text: str) -> str:
    """An argparse type: an existing file to read."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text!r}: no such file")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a directory; expected a file")
    return text


def existing(text: str) -> str:
    """An argparse type: an existing file or directory."""
    if not Path(text).exists():
        raise argparse.ArgumentTypeError(f"{text!r}: no such file or directory")
    return text
