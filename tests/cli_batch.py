"""Run many ``python -m edge.cli ...`` invocations cheaply: one forked process per case.

Usage: ``python tests/cli_batch.py CASES.json RESULTS.json``, where CASES.json is a list of
``{"id": ..., "argv": [...], "timeout": seconds}``. The parent imports what every command imports
(numpy, scipy, paho, the gateway's modules) once; each case is a child process forked from it that runs the real
``edge.cli`` module as ``python -m edge.cli`` would (``runpy`` as ``__main__``, so ``sys.exit(main())``),
with stdin from /dev/null and stdout/stderr to its own files. An exception that escapes prints its
traceback and exits 1, exactly as Python's own top level does. A case still running at its timeout is
killed with its whole process group (and anything it started) and reported as ``timed_out``.
RESULTS.json maps each id to ``{"code", "stdout", "stderr", "seconds", "timed_out"}``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

PARALLEL = 2  # children at a time: most cases wait on imports and I/O, not on a core


def _child(argv: list[str], out: Path, err: Path) -> None:
    """In the forked child: run the CLI and leave with its exit code (never returns)."""
    os.setpgid(0, 0)  # its own group: a timeout kills what it started too
    code = 1
    try:
        fd_in = os.open(os.devnull, os.O_RDONLY)
        os.dup2(fd_in, 0)
        for fd, path in ((1, out), (2, err)):
            f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(f, fd)
            os.close(f)
        import runpy
        import traceback

        sys.argv = ["stopewatch", *argv]
        try:
            runpy.run_module("edge.cli", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if exc.code is not None and not isinstance(exc.code, int):
                print(exc.code, file=sys.stderr)
        except BaseException:  # noqa: BLE001 (what the interpreter's top level does)
            traceback.print_exc()
            code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed stream: nothing more to say
                stream.flush()
        os._exit(code)


def run_cases(cases: list[dict]) -> dict[str, dict]:
    """Run every case (``PARALLEL`` at a time); returns results by id."""
    import numpy  # noqa: F401  (imported once here, shared by every child)
    import paho.mqtt.client  # noqa: F401
    import scipy.signal  # noqa: F401

    import edge.formats  # noqa: F401
    import edge.gateway.config  # noqa: F401
    import edge.gateway.model  # noqa: F401

    work = Path(tempfile.mkdtemp(prefix="cli-batch-"))
    pending = list(cases)
    running: dict[int, tuple[dict, float, Path, Path]] = {}
    results: dict[str, dict] = {}
    started = 0
    while pending or running:
        while pending and len(running) < PARALLEL:
            case = pending.pop(0)
            started += 1
            out, err = work / f"{started}.out", work / f"{started}.err"
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(case["argv"], out, err)
            running[pid] = (case, time.monotonic(), out, err)
        time.sleep(0.01)
        for pid, (case, t0, out, err) in list(running.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            timed_out = False
            if not done:
                if time.monotonic() - t0 < case["timeout"]:
                    continue
                timed_out = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
            else:  # the case is over; what it started must not outlive it
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
            del running[pid]
            results[case["id"]] = {
                "code": os.waitstatus_to_exitcode(status), "timed_out": timed_out,
                "stdout": out.read_text(errors="replace")[-4000:], "stderr": err.read_text(errors="replace")[-4000:],
                "seconds": round(time.monotonic() - t0, 2)}
            out.unlink(missing_ok=True)
            err.unlink(missing_ok=True)
    os.rmdir(work)
    return results


if __name__ == "__main__":
    cases_file, results_file = sys.argv[1:3]
    Path(results_file).write_text(json.dumps(run_cases(json.loads(Path(cases_file).read_text()))))
