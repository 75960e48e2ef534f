"""The surface archive on real SQLite and real PostgreSQL: migrations, idempotent ingest, gaps, reads,
relabels, users."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
from surface_support import event_message, health_message, status_message, waveform_message

from edge.errors import UserError
from surface.records import BadMessage, parse_event, parse_health, parse_status, parse_waveform
from surface.store import SCHEMA_VERSION, EventQuery, Rejected, open_store

SITE, NODE = "kloof-4", "l29-east"


def _ev(**kw):
    return parse_event(json.dumps(event_message(**kw)).encode(), kw.get("site", SITE), kw.get("node", NODE))


def _wf(msg, seed=0):
    return parse_waveform(json.dumps(waveform_message(msg, seed)).encode(), msg["site"], msg["node"])


def test_migrations_recorded_and_reopen_is_a_no_op(surface_url):
    with open_store(surface_url) as store:
        assert store.schema_version() == SCHEMA_VERSION
        store.ingest([_ev(seq=1)])
    with open_store(surface_url) as store:  # the second open applies nothing and keeps the data
        assert store.schema_version() == SCHEMA_VERSION
        assert store.count_events() == 1


def test_event_insert_is_idempotent_and_round_trips(surface_url):
    msg = event_message(seq=1, label="blast", confidence=0.93)
    with open_store(surface_url) as store:
        first = store.ingest([_ev(seq=1, label="blast", confidence=0.93), _wf(msg)])
        again = store.ingest([_ev(seq=1, label="blast", confidence=0.93, historical=True), _wf(msg)])
        assert (first.events_new, first.waveforms_new) == (1, 1)
        assert (again.events_new, again.events_duplicate, again.waveforms_duplicate) == (0, 1, 1)
        assert store.count_events() == 1
        detail = store.get_event(msg["event_id"])
        assert detail.event.label == "blast" and detail.event.confidence == pytest.approx(0.93)
        assert detail.event.historical is False  # the first copy is kept
        assert detail.event.features["snr_db"] == 15.0
        assert detail.event.probabilities["blast"] == pytest.approx(0.93)
        want = np.frombuffer(__import__("base64").b64decode(waveform_message(msg)["data"]), "<f4").reshape(3, 512)
        np.testing.assert_array_equal(detail.waveform.data, want)
        assert detail.waveform.channels == ("Z", "N", "E") and detail.waveform.units == "m/s"


def test_seq_gap_listed_then_closed_by_historical_events(surface_url):
    with open_store(surface_url) as store:
        store.ingest([_ev(seq=1), _ev(seq=2), _ev(seq=6)])
        gaps = store.list_missing()
        assert [(g.boot_id, g.first_seq, g.last_seq) for g in gaps] == [("b0000000000000001", 3, 5)]
        claimed = store.claim_gaps(noticed_before="9999-01-01T00:00:00.000000Z")
        assert [(g.first_seq, g.last_seq) for g in claimed] == [(3, 5)]
        assert store.claim_gaps(noticed_before="9999-01-01T00:00:00.000000Z") == []  # alerted once
        res = store.ingest([_ev(seq=4, historical=True)])
        assert res.filled == [(SITE, NODE, "b0000000000000001", 4, True)]
        assert [(g.first_seq, g.last_seq) for g in store.list_missing()] == [(3, 3), (5, 5)]
        store.ingest([_ev(seq=3, historical=True), _ev(seq=5, historical=True)])
        assert store.list_missing() == []
        closed = store.list_missing(open_only=False)
        assert [(g.first_seq, g.last_seq) for g in closed] == [(3, 5)] and closed[0].closed is not None
        # a new boot restarts at 1: no gap; a first event at seq 3 of another boot lists 1..2
        res = store.ingest([_ev(seq=1, boot_id="b2"), _ev(seq=3, boot_id="b3")])
        assert [(b.boot_id, b.previous) for b in res.boots] == [("b2", "b0000000000000001"), ("b3", "b2")]
        assert [(g.boot_id, g.first_seq, g.last_seq) for g in store.list_missing()] == [("b3", 1, 2)]


def test_status_history_nodes_and_silence(surface_url):
    with open_store(surface_url) as store:
        online = parse_status(json.dumps(status_message("online", ts=1_767_225_600)).encode(), SITE, NODE)
        res = store.ingest([online])
        assert [s.state for s in res.statuses] == ["online"] and len(res.boots) == 1
        assert store.ingest([online]).statuses == []  # the retained copy again: not a new status
        store.ingest([parse_health(json.dumps(health_message()).encode(), SITE, NODE)],
                     received="2026-01-01T00:00:00.000000Z")
        [n] = store.list_nodes()
        assert (n.state, n.backlog, n.realtime_factor) == ("online", 3, 25.0)
        assert n.crc_rate == pytest.approx(10 / 1000) and n.gap_rate_per_h == pytest.approx(2.0)
        assert n.board["temperature_c"] == 31.5 and n.model_name == "stopewatch-triaxial"
        silent = store.silent_nodes(health_before="2026-06-01T00:00:00.000000Z")
        assert [(s.site, s.node) for s in silent] == [(SITE, NODE)]
        assert store.silent_nodes(health_before="2026-06-01T00:00:00.000000Z") == []  # once
        res = store.ingest([parse_health(json.dumps(health_message()).encode(), SITE, NODE)])
        assert res.resumed == [(SITE, NODE)]
        offline = parse_status(json.dumps(status_message("offline", ts=1_767_225_700)).encode(), SITE, NODE)
        store.ingest([offline])
        assert store.list_nodes()[0].state == "offline"
        assert [s.state for s in store.status_history(SITE, NODE)] == ["offline", "online"]


def test_queries_review_queue_counts_relabel_and_audit(surface_url):
    with open_store(surface_url) as store:
        store.ingest([_ev(seq=1, label="blast", confidence=0.95, entropy=0.1),
                      _ev(seq=2, label="unknown", confidence=0.4, entropy=0.8),
                      _ev(seq=3, label="noise", confidence=0.7, entropy=0.4, snr_db=20.0),
                      _ev(seq=4, label="microseismic", confidence=0.99, entropy=0.02, historical=True,
                          node="l31-west")])
        assert store.count_events(EventQuery(label="blast")) == 1
        assert store.count_events(EventQuery(node="l31-west", historical=True)) == 1
        assert store.count_events(EventQuery(min_confidence=0.5, max_confidence=0.9)) == 1
        assert store.count_events(EventQuery(since="2026-01-01T00:00:25.000000Z")) == 2
        queue = store.review_queue()
        assert [e.seq for e in queue] == [2, 3, 1, 4]  # unknown, then noise on a clear signal, then the sure ones
        assert "unknown" in queue[0].doubt_reasons and any("noise at snr" in r for r in queue[1].doubt_reasons)
        eid = queue[0].event_id
        change = store.relabel(eid, "drilling", "ana", "regular pulses")
        assert (change.old_label, change.new_label) == ("unknown", "drilling")
        store.relabel(eid, "mechanical", "ben")
        hist = store.label_history(eid)
        assert [(h.username, h.old_label, h.new_label) for h in hist] == [("ana", "unknown", "drilling"),
                                                                          ("ben", "drilling", "mechanical")]
        assert store.get_event(eid).event.current_label == "mechanical"
        assert eid not in [e.event_id for e in store.review_queue()]
        assert store.count_events(EventQuery(reviewed=True)) == 1
        assert [a.action for a in store.list_audit()] == ["relabel", "relabel"]
        by_label = {c.key: c.count for c in store.counts(by="label", bucket="day")}
        assert by_label == {"blast": 1, "mechanical": 1, "noise": 1, "microseismic": 1}
        by_node = {c.key: c.count for c in store.counts(by="node", bucket="hour")}
        assert by_node == {f"{SITE}/{NODE}": 3, f"{SITE}/l31-west": 1}
        with pytest.raises(ValueError, match="allowed"):
            store.relabel(eid, "earthquake", "ana")
        with pytest.raises(KeyError):
            store.relabel("no.such.event", "blast", "ana")


def test_users_store_only_the_hash(surface_url):
    with open_store(surface_url) as store:
        store.create_user("ana", "$argon2id$fakehashvalue", "reviewer", actor="root")
        with pytest.raises(ValueError, match="exists"):
            store.create_user("ana", "$argon2id$x", "viewer")
        with pytest.raises(ValueError, match="role"):
            store.create_user("ben", "$argon2id$x", "god")
        store.set_role("ana", "admin", actor="root")
        store.set_password_hash("ana", "$argon2id$other")
        u = store.get_user("ana")
        assert (u.role, u.password_hash) == ("admin", "$argon2id$other")
        assert "other" not in repr(u)
        store.delete_user("ana", actor="root")
        assert store.get_user("ana") is None and store.list_users() == []
        assert [a.action for a in store.list_audit()] == ["delete user", "set role", "create user"]


def test_bad_messages_are_refused_with_the_field_and_kept(surface_url):
    bad = event_message(seq=1)
    bad["label"] = "earthquake"
    with pytest.raises(BadMessage, match="'label'.*allowed"):
        parse_event(json.dumps(bad).encode(), SITE, NODE)
    with pytest.raises(BadMessage, match="topic says"):
        parse_event(json.dumps(event_message(seq=1)).encode(), SITE, "other-node")
    with pytest.raises(BadMessage, match="not JSON"):
        parse_status(b"\xff{", SITE, NODE)
    wf = waveform_message(event_message(seq=1))
    wf["samples"] = 100
    with pytest.raises(BadMessage, match="bytes"):
        parse_waveform(json.dumps(wf).encode(), SITE, NODE)
    with open_store(surface_url) as store:
        store.ingest([Rejected("stopewatch/v1/a/b/event", "not JSON", b"\xff{")])
        assert store.rejected()[0][1:] == ("stopewatch/v1/a/b/event", "not JSON", b"\xff{")


def test_bad_urls_are_one_line_errors(tmp_path):
    for url, want in [("mysql://x", "expected sqlite"), (f"sqlite:///{tmp_path}/no/dir/x.db", "does not exist"),
                      ("postgresql://nobody@127.0.0.1:1/none", "cannot connect")]:
        with pytest.raises(UserError, match=want) as err:
            open_store(url)
        assert "\n" not in str(err.value)


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "s.db"
    open_store(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_version VALUES (99, 'future', 'x')")
    with pytest.raises(UserError, match="newer"):
        open_store(f"sqlite:///{path}")


def test_postgresql_connection_dropped_by_the_server_is_replaced(pg_url):
    import psycopg

    surface_url = pg_url
    with open_store(surface_url) as store:
        store.ingest([_ev(seq=1)])
        pid = store._conn.info.backend_pid
        with psycopg.connect(surface_url, autocommit=True) as admin:  # as a server restart or failover would
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        assert store.ingest([_ev(seq=2)]).events_new == 1  # the write is retried on a new connection
        assert store._conn.info.backend_pid != pid
        assert store.count_events() == 2
        with psycopg.connect(surface_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (store._conn.info.backend_pid,))
        assert store.count_events() == 2  # and a read too
