"""Who may see what: login and logout, sessions with an idle timeout, roles, and a default-deny guard.

The guard runs before every request. Only the endpoints in :data:`PUBLIC` (the login form and the
package's own CSS) are reachable without a session, so a new route is protected without anyone
remembering to. Anonymous page requests are sent to the login form; anonymous API requests get 401.
A view names the least role it needs with :func:`requires` (default ``viewer``); below it is 403.

The session is Flask's signed cookie (HttpOnly, SameSite=Lax, Secure with ``web.secure_cookie``). It
holds the user name, when it was last used, and a fingerprint of the password hash: each request
re-reads the user, so a removed user, a changed role or a changed password takes effect at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, current_app, flash, g, jsonify, redirect, render_template, request, session, url_for

from surface.accounts import authenticate, role_at_least, session_tag
from surface.web.forms import LoginForm, LogoutForm

log = logging.getLogger(__name__)
bp = Blueprint("auth", __name__)
PUBLIC = frozenset({"auth.login", "static"})
MAX_FAILURES, FAILURE_WINDOW_S = 10, 600.0  # per user name: then logins are refused until the window passes


def requires(role: str) -> Callable:
    """Mark a view as needing at least ``role`` (viewer < reviewer < admin)."""
    def mark(fn: Callable) -> Callable:
        fn.min_role = role  # type: ignore[attr-defined]
        return fn
    return mark


def _deny(status: int, message: str) -> Any:
    if request.path.startswith("/api/"):
        return jsonify({"error": message}), status
    if status == 401:
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    return render_template("error.html", status=status, message=message), status


def guard() -> Any:
    """before_request: a valid, fresh session with a sufficient role, or a refusal."""
    g.user = None
    endpoint = request.endpoint
    if endpoint is None:  # no such route: Flask answers 404, which tells nothing
        return None
    if endpoint in PUBLIC:
        return None
    store = current_app.config["STORE"]
    name = session.get("user")
    if not name:
        return _deny(401, "login required")
    user = store.get_user(name)
    idle = time.time() - float(session.get("seen", 0))
    if user is None or session.get("tag") != session_tag(user):
        session.clear()
        return _deny(401, "login required")
    if idle > current_app.config["SESSION_TIMEOUT_S"]:
        session.clear()
        flash("Your session timed out; log in again.")
        return _deny(401, "session timed out")
    session["seen"] = time.time()
    g.user = user
    view = current_app.view_functions.get(endpoint)
    needed = getattr(view, "min_role", "viewer")
    if not role_at_least(user.role, needed):
        return _deny(403, f"this needs the {needed} role; {user.username} is a {user.role}")
    return None


class _Failures:
    """Failed logins per user name in the last window (in memory: one process serves the page)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, list[float]] = {}

    def blocked(self, name: str) -> bool:
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._seen.get(name, []) if now - t < FAILURE_WINDOW_S]
            self._seen[name] = recent
            return len(recent) >= MAX_FAILURES

    def add(self, name: str) -> None:
        with self._lock:
            self._seen.setdefault(name, []).append(time.monotonic())

    def clear(self, name: str) -> None:
        with self._lock:
            self._seen.pop(name, None)


def _safe_next(target: str | None) -> str:
    """Only a path on this site (no scheme, no host, no '//'): never an open redirect."""
    if not target:
        return url_for("views.nodes")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("views.nodes")
    return target


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    form = LoginForm()
    failures: _Failures = current_app.extensions["stopewatch_failures"]
    status = 200
    if form.validate_on_submit():
        name = form.username.data.strip()
        store = current_app.config["STORE"]
        user = None if failures.blocked(name) else authenticate(store, name, form.password.data)
        if user is not None:
            failures.clear(name)
            session.clear()  # a fresh session: nothing from before the login carries over
            session.permanent = True
            session.update(user=user.username, tag=session_tag(user), seen=time.time())
            store.audit(user.username, "login", request.remote_addr or "")
            log.info("web: %s (%s) logged in from %s", user.username, user.role, request.remote_addr)
            return redirect(_safe_next(request.args.get("next")))
        failures.add(name)
        store.audit(name[:64], "login failed", request.remote_addr or "")
        log.warning("web: failed login for %r from %s", name[:64], request.remote_addr)
        flash("Wrong user name or password." if not failures.blocked(name)
              else "Too many failed logins for this user; wait 10 minutes.")
        status = 401
    elif request.method == "POST":
        status = 400
    return render_template("login.html", form=form), status


@bp.route("/logout", methods=["POST"])
def logout() -> Any:
    form = LogoutForm()
    if form.validate_on_submit() and g.user is not None:
        current_app.config["STORE"].audit(g.user.username, "logout", "")
    session.clear()
    return redirect(url_for("auth.login"))


def install(app: Any) -> None:
    app.extensions["stopewatch_failures"] = _Failures()
    app.before_request(guard)
    app.register_blueprint(bp)

    @app.context_processor
    def _user() -> dict:
        return {"user": g.get("user"), "logout_form": LogoutForm(), "can": lambda r: bool(
            g.get("user") and role_at_least(g.user.role, r))}
