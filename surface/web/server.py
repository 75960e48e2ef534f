"""The session key file and the waitress server in a background thread."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
import threading
from pathlib import Path

from edge.errors import UserError
from surface.config import SurfaceConfig, WebConfig
from surface.store import Store

log = logging.getLogger(__name__)


def load_secret_key(path: str | Path) -> bytes:
    """The key that signs session cookies: read from ``path``, or made (32 random bytes, hex) and written
    there with mode 0600 when the file does not exist. A key file others may read is refused."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key(path)
    except OSError as exc:
        raise UserError(f"web.secret_key_file {path}: cannot create ({exc.strerror or exc})") from None
    key = secrets.token_hex(32)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    log.info("web: made a new session key in %s (mode 600)", path)
    return key.encode()


def _read_key(path: Path) -> bytes:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UserError(f"web.secret_key_file {path}: mode {stat.S_IMODE(mode):o} lets others read it; "
                        f"chmod 600 {path}")
    key = path.read_text().strip()
    if len(key) < 32:
        raise UserError(f"web.secret_key_file {path}: holds {len(key)} characters; at least 32 expected "
                        "(delete it to have a new one made)")
    return key.encode()


class WebServer:
    """waitress serving the page on ``host:port`` in a daemon thread; ``port`` 0 picks a free one."""

    def __init__(self, store: Store, cfg: WebConfig, host: str | None = None, port: int | None = None) -> None:
        from waitress.server import create_server

        from surface.web.app import create_app

        self.app = create_app(store, cfg, load_secret_key(cfg.secret_key_file))
        try:
            self._server = create_server(self.app, host=host or cfg.host, port=cfg.port if port is None else port,
                                         threads=cfg.threads, ident="stopewatch")
        except OSError as exc:
            raise UserError(f"web: cannot listen on {host or cfg.host}:{cfg.port if port is None else port} "
                            f"({exc.strerror or exc}); choose another web.port") from None
        self.host, self.port = self._server.effective_host, int(self._server.effective_port)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in str(self.host) else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> WebServer:
        self._thread = threading.Thread(target=self._run, name="review-page", daemon=True)
        self._thread.start()
        log.info("web: the review page is at %s", self.url)
        return self

    def _run(self) -> None:
        with contextlib.suppress(OSError):  # closed under it by stop()
            self._server.run()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """Close the listening socket and every open connection, then stop the worker threads."""
        from waitress import wasyncore

        server = self._server
        wasyncore.close_all(server._map)  # the listener, open connections, the trigger: the loop then ends
        server.task_dispatcher.shutdown()
        if self._thread is not None:
            self._thread.join(5)


def start_web(store: Store, cfg: WebConfig, host: str | None = None, port: int | None = None) -> WebServer:
    """Start the page over ``store`` and return its server (call ``stop()``)."""
    return WebServer(store, cfg, host, port).start()


def run_serve(cfg: SurfaceConfig) -> int:
    """``stopewatch surface serve``: the page alone over the archive, until SIGTERM/SIGINT."""
    import signal

    from surface.store import open_store

    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    with open_store(cfg.database.url) as store:
        web = start_web(store, cfg.web)
        print(f"the review page is at {web.url} (archive {store.url}); Ctrl-C ends", flush=True)
        if not store.list_users():
            print("no users yet: add one with 'stopewatch surface user add NAME --role admin'", flush=True)
        code = 0
        while not done.wait(1.0):
            if not web.alive():
                log.error("web: the server thread ended; exiting")
                code = 1
                break
        web.stop()
    return code
