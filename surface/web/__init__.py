"""The review page: Flask pages server-rendered with Jinja2, served by waitress from the collector
(``[web] enabled = true``) or alone (``stopewatch surface serve``).

- :mod:`surface.web.app`: :func:`create_app` (the Flask app over one :class:`surface.store.Store`);
- :mod:`surface.web.auth`: login, logout, sessions with an idle timeout, roles, default-deny access;
- :mod:`surface.web.views`: the pages and the JSON API, thin over the store's read API;
- :mod:`surface.web.plots`: the PNG plots (matplotlib's Agg backend);
- :mod:`surface.web.server`: the session key file and the waitress server in a thread.
"""

from surface.web.app import create_app
from surface.web.server import WebServer, load_secret_key, start_web

__all__ = ["WebServer", "create_app", "load_secret_key", "start_web"]
