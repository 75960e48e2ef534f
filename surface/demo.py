"""The surface beside ``stopewatch demo --surface``: the collector on the demo's broker and its review page."""

from __future__ import annotations

import contextlib
import secrets
from pathlib import Path

from edge.errors import UserError


def demo_surface(web_port: int):
    """A hook for :func:`edge.devtools.demo.run_demo`: the collector archiving into SQLite in the demo's
    directory and the review page on ``web_port`` (any free port when it is taken) with a new demo login (an
    admin, so that every page shows); both are stopped by the demo's stack before its broker."""

    def start(stack: contextlib.ExitStack, work: Path, broker_port: int) -> None:
        from surface.accounts import add_user
        from surface.collector import Collector
        from surface.config import parse_surface_config
        from surface.web.server import start_web

        cfg = parse_surface_config({
            "database": {"url": f"sqlite:///{work / 'surface.db'}"},
            "broker": {"port": broker_port, "client_id": "stopewatch-demo-collector", "session_expiry_s": 0},
            "alerts": {"health_interval_s": 10.0, "publish": False},
            "web": {"enabled": True, "secret_key_file": str(work / "web.key")}}, "demo")
        collector = Collector(cfg)
        stack.callback(collector.stop)
        password = secrets.token_urlsafe(9)
        add_user(collector.store, "demo", "admin", password, actor="demo")
        try:
            web = start_web(collector.store, cfg.web, port=web_port)
        except UserError:  # the port is taken (another page, another demo): any free one will do
            web = start_web(collector.store, cfg.web, port=0)
        stack.callback(web.stop)
        collector.start()
        print(f"collector: archiving into {work / 'surface.db'} (removed at the end)")
        print(f"review page: {web.url}  login: demo / {password}  (Ctrl-C ends the demo)")

    return start
