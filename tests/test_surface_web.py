"""The review page through Flask's test client, on real SQLite and real PostgreSQL archives.

Access: every route of the app's URL map refuses an anonymous request (a page redirects to the login
form, the API answers 401), a viewer cannot relabel (403), a POST without its CSRF token is refused
(400), sessions time out and end with the user, the cookie carries HttpOnly and SameSite, and no
password is ever stored or logged in clear. Then the pages: filters, one event, relabel, the queue.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from surface_support import (
    event_message,
    health_message,
    ingest_messages,
    status_message,
    web_login,
    web_opener,
)

from edge.cli import ROLES as CLI_ROLES
from edge.cli import main
from edge.devtools.broker import free_port, wait_until
from edge.errors import UserError
from surface import accounts
from surface.config import WebConfig, parse_surface_config
from surface.store import ROLES, EventQuery, open_store
from surface.web import create_app, load_secret_key
from surface.web.auth import PUBLIC

ROOT = Path(__file__).resolve().parents[1]
SITE, NODE = "kloof-4", "l29-east"
PASSWORDS = {"ada": "correct-horse-ada-7", "rex": "battery-staple-rex-8", "vic": "viewer-only-vic-9"}
TOKEN = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


@pytest.fixture
def archive(surface_url):
    """An archive with 30 events of two nodes (with waveforms), health, status, and three users."""
    store = open_store(surface_url)
    msgs = []
    for seq in range(1, 21):
        msgs.append(event_message(seq=seq, label=("blast", "noise", "unknown", "microseismic")[seq % 4],
                                  confidence=0.35 + 0.03 * seq, entropy=0.9 - 0.04 * seq))
    for seq in (1, 2, 3, 4, 5, 6, 7, 8, 9, 12):  # 10 and 11 are missing
        msgs.append(event_message(node="l31-west", seq=seq, label="drilling", confidence=0.97, entropy=0.05,
                                  historical=seq == 12))
    ingest_messages(store, msgs, waveforms=True)
    ingest_messages(store, [], health=[(SITE, NODE, health_message())],
                    status=[(SITE, NODE, status_message("online")), (SITE, "l31-west", status_message("offline"))])
    for name, role in (("ada", "admin"), ("rex", "reviewer"), ("vic", "viewer")):
        accounts.add_user(store, name, role, PASSWORDS[name], actor="test")
    yield store
    store.close()


@pytest.fixture
def app(archive, tmp_path):
    cfg = WebConfig(secret_key_file=str(tmp_path / "web.key"), page_size=10)
    app = create_app(archive, cfg, load_secret_key(cfg.secret_key_file))
    app.config["TESTING"] = False  # CSRF stays on: this is what is tested
    return app


def login(client, name: str, password: str | None = None):
    page = client.get("/login")
    token = TOKEN.search(page.text).group(1)
    return client.post("/login", data={"username": name, "password": password or PASSWORDS[name],
                                       "csrf_token": token})


def token_of(client, path: str = "/nodes") -> str:
    return TOKEN.search(client.get(path).text).group(1)


def an_event(store) -> str:
    return store.query_events(EventQuery(node=NODE, limit=1))[0].event_id


def url_for_rule(rule, event_id: str) -> str:
    values = {"event_id": event_id, "by": "label", "filename": "style.css", "kind": "waveform"}
    return rule.build({k: values[k] for k in rule.arguments})[1]


# --------------------------------------------------------------------------- access
def test_every_route_refuses_anonymous(app, archive):
    """Every rule of the URL map and each of its methods: anonymous pages go to the login form, the API
    answers 401. Only the login form and the package's CSS are public."""
    client = app.test_client()
    eid = an_event(archive)
    endpoints = {r.endpoint for r in app.url_map.iter_rules()}
    assert {"auth.login", "static"} == PUBLIC and endpoints >= PUBLIC
    # the pages this test must reach (a new one is checked by the loop below without being listed here)
    assert {"views.nodes", "views.events", "views.event", "views.relabel", "views.queue", "views.counts",
            "views.alerts", "views.audit", "api.api_events", "api.api_event", "auth.logout"} <= endpoints
    checked = 0
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC:
            continue
        url = url_for_rule(rule, eid)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            resp = client.open(url, method=method)
            checked += 1
            if url.startswith("/api/"):
                assert resp.status_code == 401, (method, url, resp.status_code)
                assert resp.get_json() == {"error": "login required"}
            else:
                assert resp.status_code == 302, (method, url, resp.status_code)
                assert resp.headers["Location"].startswith("/login?next="), (method, url)
    assert checked >= 14
    assert archive.label_history(eid) == []  # the anonymous POSTs changed nothing
    # the public ones give nothing of the archive away
    assert client.get("/static/style.css").status_code == 200
    assert client.get("/static/../store.py").status_code == 404
    assert eid.encode() not in client.get("/login").data


def test_roles_viewer_cannot_relabel_reviewer_can_admin_audits(app, archive):
    eid = an_event(archive)
    before = archive.get_event(eid).event.current_label
    viewer = app.test_client()
    assert login(viewer, "vic").status_code == 302
    page = viewer.get(f"/events/{eid}")
    assert page.status_code == 200 and b"A viewer cannot relabel" in page.data and b"Relabel</button>" not in page.data
    token = token_of(viewer, f"/events/{eid}")  # a valid token: the refusal is the role's, not the token's
    resp = viewer.post(f"/events/{eid}/relabel", data={"label": "blast", "note": "viewer", "csrf_token": token})
    assert resp.status_code == 403 and b"needs the reviewer role" in resp.data
    assert viewer.get("/audit").status_code == 403
    assert archive.label_history(eid) == [] and archive.get_event(eid).event.current_label == before

    reviewer = app.test_client()
    login(reviewer, "rex")
    new = "drilling" if before != "drilling" else "blast"
    resp = reviewer.post(f"/events/{eid}/relabel",
                         data={"label": new, "note": "a drill rig two drives up", "csrf_token": token_of(reviewer)})
    assert resp.status_code == 303
    detail = archive.get_event(eid)
    assert detail.event.reviewed_label == new and detail.event.reviewed_by == "rex"
    assert [(c.username, c.old_label, c.new_label, c.note) for c in detail.labels] == \
        [("rex", before, new, "a drill rig two drives up")]
    assert any(a.action == "relabel" and a.username == "rex" and eid in a.detail for a in archive.list_audit())
    page = reviewer.get(f"/events/{eid}")
    assert b"a drill rig two drives up" in page.data and f'id="current-label">{new}<'.encode() in page.data
    assert reviewer.get("/audit").status_code == 403
    # a label outside the vocabulary is refused by the form
    reviewer.post(f"/events/{eid}/relabel", data={"label": "earthquake", "csrf_token": token_of(reviewer)})
    assert archive.get_event(eid).event.reviewed_label == new

    admin = app.test_client()
    login(admin, "ada")
    audit = admin.get("/audit")
    assert audit.status_code == 200 and b"relabel" in audit.data and b"rex" in audit.data
    assert ROLES == CLI_ROLES == ("viewer", "reviewer", "admin")


def test_post_without_csrf_token_is_refused(app, archive):
    eid = an_event(archive)
    client = app.test_client()
    # the login form itself needs its token
    resp = client.post("/login", data={"username": "rex", "password": PASSWORDS["rex"]})
    assert resp.status_code == 400
    assert client.get("/nodes").status_code == 302  # not logged in
    login(client, "rex")
    for data in ({"label": "blast"}, {"label": "blast", "csrf_token": "forged"}):
        resp = client.post(f"/events/{eid}/relabel", data=data)
        assert resp.status_code == 400 and b"CSRF" in resp.data
    another = app.test_client()
    login(another, "ada")  # a token from another session does not pass either
    resp = client.post(f"/events/{eid}/relabel", data={"label": "blast", "csrf_token": token_of(another)})
    assert resp.status_code == 400
    assert client.post("/logout").status_code == 400  # logout is a form too
    assert archive.label_history(eid) == []
    assert client.get("/nodes").status_code == 200  # still logged in


def test_password_never_stored_or_logged_in_clear(surface_url, tmp_path, caplog, capsys, monkeypatch):
    caplog.set_level(logging.DEBUG)
    first, second, wrong = "first-secret-Pa55", "second-secret-Pa55", "wrong-secret-Pa55"
    pw_file = tmp_path / "pw"
    pw_file.write_text(first + "\n")
    assert main(["surface", "user", "add", "ora", "--role", "reviewer", "--db", surface_url,
                 "--password-file", str(pw_file)]) == 0
    store = open_store(surface_url)
    cfg = WebConfig(secret_key_file=str(tmp_path / "web.key"))
    app = create_app(store, cfg, load_secret_key(cfg.secret_key_file))
    client = app.test_client()
    assert login(client, "ora", wrong).status_code == 401
    assert login(client, "ora", first).status_code == 302
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO(second + "\n"))
    assert main(["surface", "user", "passwd", "ora", "--db", surface_url, "--password-file", "-"]) == 0
    assert client.get("/nodes").status_code == 302  # the password change ended the session
    assert login(client, "ora", first).status_code == 401
    assert login(client, "ora", second).status_code == 302
    user = store.get_user("ora")
    assert user.password_hash.startswith("$argon2id$")
    dump = _dump_database(store)
    out = capsys.readouterr()
    for secret in (first, second, wrong):
        assert secret not in dump
        assert secret not in caplog.text
        assert secret not in out.out + out.err
    assert "ora" in dump and "login failed" in dump  # the dump did read the tables
    store.close()


def _dump_database(store) -> str:
    """Every row of every table, as text (bytes decoded leniently)."""
    if store.dialect.name == "sqlite":
        tables = [r[0] for r in store._rows("SELECT name FROM sqlite_master WHERE type = 'table'")]
    else:
        tables = [r[0] for r in store._rows("SELECT table_name FROM information_schema.tables "
                                            "WHERE table_schema = 'public'")]
    assert "users" in tables and "audit" in tables
    parts = []
    for t in tables:
        for row in store._rows(f"SELECT * FROM {t}"):
            parts.append(" ".join(bytes(v).decode("latin-1") if isinstance(v, bytes | memoryview) else str(v)
                                  for v in row))
    return "\n".join(parts)


def test_session_times_out_and_ends_with_the_user(app, archive, monkeypatch):
    client = app.test_client()
    login(client, "rex")
    assert client.get("/nodes").status_code == 200
    real = time.time
    timeout = app.config["SESSION_TIMEOUT_S"]
    monkeypatch.setattr("surface.web.auth.time.time", lambda: real() + timeout + 5)
    resp = client.get("/nodes")
    assert resp.status_code == 302 and resp.headers["Location"].startswith("/login")
    assert client.get("/api/events").status_code == 401  # the session was cleared, not just refused once
    monkeypatch.setattr("surface.web.auth.time.time", real)
    login(client, "rex")
    assert client.get("/api/events").status_code == 200
    accounts.change_role(archive, "rex", "viewer", actor="test")
    resp = client.post(f"/events/{an_event(archive)}/relabel", data={"label": "blast",
                                                                     "csrf_token": token_of(client)})
    assert resp.status_code == 403  # the role is read on each request
    accounts.remove_user(archive, "rex", actor="test")
    assert client.get("/api/events").status_code == 401


def test_cookie_flags_and_security_headers(archive, tmp_path):
    for secure in (False, True):
        cfg = WebConfig(secret_key_file=str(tmp_path / "web.key"), secure_cookie=secure)
        app = create_app(archive, cfg, load_secret_key(cfg.secret_key_file))
        client = app.test_client()
        resp = login(client, "rex")
        cookie = resp.headers["Set-Cookie"]
        assert "stopewatch_session=" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
        assert ("Secure" in cookie) is secure
        page = client.get("/nodes")
        assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
        assert page.headers["Cache-Control"] == "no-store"


def test_login_refuses_wrong_passwords_and_open_redirects(app):
    client = app.test_client()
    assert login(client, "rex", "not-the-password").status_code == 401
    assert login(client, "nobody", "not-the-password").status_code == 401
    page = client.get("/login?next=//evil.example/x")
    token = TOKEN.search(page.text).group(1)
    resp = client.post("/login?next=//evil.example/x", data={"username": "rex", "password": PASSWORDS["rex"],
                                                             "csrf_token": token})
    assert resp.status_code == 302 and resp.headers["Location"] == "/nodes"
    client.post("/logout", data={"csrf_token": token_of(client)})
    resp = client.get("/queue")
    assert resp.status_code == 302
    token = TOKEN.search(client.get(resp.headers["Location"]).text).group(1)
    resp = client.post(resp.headers["Location"], data={"username": "rex", "password": PASSWORDS["rex"],
                                                       "csrf_token": token})
    assert resp.headers["Location"] == "/queue"  # back where the login interrupted


def test_secret_key_file_is_made_0600_and_reused(tmp_path):
    path = tmp_path / "web.key"
    key = load_secret_key(path)
    assert len(key) == 64 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_secret_key(path) == key
    path.chmod(0o640)
    with pytest.raises(UserError, match="lets others read it; chmod 600"):
        load_secret_key(path)


# --------------------------------------------------------------------------- the pages
def test_event_filters_paging_and_api(app, archive):
    client = app.test_client()
    login(client, "vic")
    page = client.get("/events")
    assert page.status_code == 200 and b"30 events; page 1 of 3" in page.data
    page = client.get("/events?node=l31-west&historical=no&page=1")
    assert b"9 events; page 1 of 1" in page.data
    page = client.get("/events?label=blast&min_confidence=0.5")
    want = archive.count_events(EventQuery(label="blast", min_confidence=0.5))
    assert want > 0 and f"{want} events".encode() in page.data
    bad = client.get("/events?since=yesterday&min_confidence=2")
    assert bad.status_code == 400 and b"since = &#39;yesterday&#39;" in bad.data and b"min_confidence" in bad.data
    api = client.get("/api/events?node=l29-east&limit=5&page=2").get_json()
    assert api["total"] == 20 and len(api["events"]) == 5 and api["page"] == 2
    assert all(e["node"] == "l29-east" for e in api["events"])
    eid = api["events"][0]["event_id"]
    one = client.get(f"/api/events/{eid}").get_json()
    assert one["event"]["event_id"] == eid and one["waveform"]["channels"] == ["Z", "N", "E"]
    assert client.get("/api/events/nope").status_code == 404
    assert client.get("/api/events?limit=x").status_code == 400
    nodes = client.get("/api/nodes").get_json()["nodes"]
    assert {n["node"] for n in nodes} == {"l29-east", "l31-west"}


def test_event_page_plots_queue_counts_alerts_nodes(app, archive):
    client = app.test_client()
    login(client, "rex")
    eid = an_event(archive)
    page = client.get(f"/events/{eid}")
    text = page.text
    assert page.status_code == 200 and "Relabel</button>" in text
    assert "dominant_hz" in text and ">Hz<" in text and ">m/s<" in text  # features with their units
    assert "probabilities" in text.lower() and "Label history" in text
    for kind in ("waveform", "spectrogram"):
        png = client.get(f"/events/{eid}/{kind}.png")
        assert png.status_code == 200 and png.mimetype == "image/png" and png.data[:8] == b"\x89PNG\r\n\x1a\n"
    assert client.get("/events/nope").status_code == 404
    queue = client.get("/queue").text
    first = archive.review_queue(limit=1)[0]
    assert "unknown" in queue and first.event_id in queue
    assert queue.index(first.event_id) < queue.index(archive.review_queue(limit=2)[1].event_id)
    for by in ("label", "node"):
        png = client.get(f"/counts/{by}.png?bucket=hour")
        assert png.status_code == 200 and png.data[:4] == b"\x89PNG"
    assert client.get("/counts?bucket=week").status_code == 400
    alerts = client.get("/alerts").text
    assert "10–11" in alerts  # the missing seqs of l31-west
    nodes = client.get("/nodes").text
    assert "offline" in nodes and "online" in nodes and "25×" in nodes and "1.00 %" in nodes  # crc 10 / 1000
    assert "temperature_c 31.5" in nodes


# --------------------------------------------------------------------------- CLI and config
def test_user_commands(tmp_path, capsys, monkeypatch):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    pw = tmp_path / "pw"
    pw.write_text("long-enough-pw\n")
    assert main(["surface", "user", "add", "ann", "--role", "admin", "--db", url, "--password-file", str(pw)]) == 0
    assert main(["surface", "user", "add", "ann", "--role", "admin", "--db", url, "--password-file", str(pw)]) == 2
    pw.write_text("short\n")
    assert main(["surface", "user", "add", "bo", "--role", "viewer", "--db", url, "--password-file", str(pw)]) == 2
    assert main(["surface", "user", "role", "ann", "viewer", "--db", url]) == 0
    assert main(["surface", "user", "remove", "nobody", "--db", url]) == 2
    err = capsys.readouterr().err
    assert main(["surface", "user", "list", "--db", url]) == 0
    assert capsys.readouterr().out.split("\t")[:2] == ["ann", "viewer"]
    assert main(["surface", "user", "remove", "ann", "--db", url]) == 0
    assert "already exists" in err and "password too short" in err and "no user 'nobody'" in err
    assert all(line.startswith("stopewatch: error: ") for line in err.strip().splitlines())
    with open_store(url) as store:
        assert store.list_users() == []
        actions = [a.action for a in store.list_audit()]
        assert actions == ["delete user", "set role", "create user"]


@pytest.mark.parametrize("web, want", [
    ({"port": 0}, "web.port = 0; allowed 1 to 65535"),
    ({"session_timeout_min": 0.5}, "web.session_timeout_min = 0.5; allowed 1 to 10080 (minutes)"),
    ({"enabled": "yes"}, "web.enabled = 'yes'; expected bool"),
    ({"host": "a b"}, "web.host = 'a b'; expected an address"),
    ({"secret_key_file": "/nonexistent/dir/k"}, "directory /nonexistent/dir does not exist"),
    ({"colour": "blue"}, "unknown key web.colour"),
])
def test_bad_web_config_is_one_line(web, want):
    with pytest.raises(UserError, match=re.escape(want)) as exc:
        parse_surface_config({"web": web}, "surface.toml")
    assert "\n" not in str(exc.value) and str(exc.value).startswith("surface.toml: ")


def test_surface_serve_process(tmp_path):
    """``stopewatch surface serve``: the page over an archive, refused to anonymous, logged into, stopped."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    with open_store(url) as store:
        ingest_messages(store, [event_message(seq=s) for s in (1, 2, 3)], waveforms=True)
        accounts.add_user(store, "rex", "reviewer", PASSWORDS["rex"], actor="test")
    port = free_port()
    (tmp_path / "surface.toml").write_text(f'[database]\nurl = "{url}"\n[web]\nport = {port}\n'
                                           'secret_key_file = "web.key"\n')
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "surface", "serve", "--config",
                             str(tmp_path / "surface.toml")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        assert wait_until(lambda: _answers(base + "/login"), 30)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + "/api/events", timeout=10)
        assert refused.value.code == 401
        opener = web_opener()
        web_login(opener, base, "rex", PASSWORDS["rex"])
        body = json.loads(opener.open(base + "/api/events", timeout=10).read())
        assert body["total"] == 3
        assert stat.S_IMODE((tmp_path / "web.key").stat().st_mode) == 0o600
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, out
    assert f"the review page is at http://127.0.0.1:{port}/" in out
    assert PASSWORDS["rex"] not in out


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2).close()
        return True
    except (urllib.error.URLError, OSError):
        return False


def test_example_config_has_every_web_key_at_its_default():
    from dataclasses import fields

    from surface.config import load_surface_config

    example = ROOT / "surface" / "surface.example.toml"
    cfg = load_surface_config(example)
    assert cfg.web == WebConfig(secret_key_file=str(ROOT / "surface" / "surface-web.key"))
    text = example.read_text().split("[web]")[1]
    assert all(re.search(rf"^{f.name} = ", text, re.M) for f in fields(WebConfig))
    doc = (ROOT / "docs" / "surface.md").read_text()
    assert all(f"`web.{f.name}`" in doc for f in fields(WebConfig))
