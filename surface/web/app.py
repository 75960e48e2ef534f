"""The Flask app of the review page over one archive."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from flask import Flask
from flask_wtf.csrf import CSRFError, CSRFProtect

from surface.config import WebConfig
from surface.store import Store

HERE = Path(__file__).resolve().parent


def create_app(store: Store, cfg: WebConfig, secret_key: bytes) -> Flask:
    """The page over ``store`` (shared with the collector when it serves the page; the store is thread-safe).

    ``secret_key`` signs the session cookies and the CSRF tokens (:func:`surface.web.server.load_secret_key`).
    """
    from surface.web import auth, views

    app = Flask("surface.web", template_folder=str(HERE / "templates"), static_folder=str(HERE / "static"))
    app.config.update(
        SECRET_KEY=secret_key,
        STORE=store,
        WEB=cfg,
        SESSION_TIMEOUT_S=cfg.session_timeout_min * 60.0,
        PERMANENT_SESSION_LIFETIME=timedelta(minutes=cfg.session_timeout_min),
        SESSION_COOKIE_NAME="stopewatch_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=cfg.secure_cookie,
        SESSION_REFRESH_EACH_REQUEST=True,
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session, which has its own timeout
        MAX_CONTENT_LENGTH=64 * 1024,  # the page's forms are small; a bigger body is refused (413)
        JSON_SORT_KEYS=False,
    )
    app.jinja_env.autoescape = True
    auth.install(app)  # the login guard runs first: anonymous POSTs go to the login form, not to CSRF
    CSRFProtect(app)
    views.install(app)

    @app.errorhandler(CSRFError)
    def _csrf(exc: CSRFError):
        from flask import render_template

        return render_template("error.html", status=400, message=f"form refused: {exc.description}"), 400

    @app.after_request
    def _headers(resp):
        # Nothing is loaded from elsewhere; the page may not be framed (clickjacking).
        resp.headers.setdefault("Content-Security-Policy", "default-src 'self'; img-src 'self'; "
                                "style-src 'self'; script-src 'none'; frame-ancestors 'none'; form-action 'self'")
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "same-origin")
        if resp.mimetype == "text/html":
            resp.headers.setdefault("Cache-Control", "no-store")
        return resp

    return app
