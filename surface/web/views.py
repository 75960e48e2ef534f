"""The pages and the JSON API: each view reads the request, calls the store, and renders a template.

No SQL here: everything goes through :class:`surface.store.Store`'s read API and ``relabel``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.datastructures import MultiDict

from edge.vocabulary import LABELS
from firmware_bridge.clock import iso_utc, parse_utc
from surface.export import FEATURE_UNITS
from surface.store import EventQuery, EventRow, Store
from surface.web import plots
from surface.web.auth import requires
from surface.web.forms import RelabelForm

bp = Blueprint("views", __name__)
api = Blueprint("api", __name__, url_prefix="/api")
API_MAX = 1000  # events per API page


def _store() -> Store:
    return current_app.config["STORE"]


# --------------------------------------------------------------------------- the event filters
@dataclass(frozen=True)
class Filters:
    """The event list's filters as the form shows them (text), and the query they make."""

    query: EventQuery
    form: dict[str, str]
    errors: tuple[str, ...]
    page: int


def _time(text: str, name: str, errors: list[str]) -> str | None:
    if not text:
        return None
    try:
        return iso_utc(parse_utc(text))
    except ValueError:
        errors.append(f"{name} = {text!r}: expected a UTC time such as 2026-01-01 or 2026-01-01T10:30")
        return None


def _number(text: str, name: str, errors: list[str], lo: float = 0.0, hi: float = 1.0) -> float | None:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and lo <= value <= hi):
        errors.append(f"{name} = {text!r}: expected a number from {lo:g} to {hi:g}")
        return None
    return value


def _tristate(text: str, name: str, errors: list[str]) -> bool | None:
    if text in ("", "any"):
        return None
    if text in ("yes", "no"):
        return text == "yes"
    errors.append(f"{name} = {text!r}: expected yes, no or any")
    return None


def parse_filters(args: MultiDict, limit: int) -> Filters:
    """The query of the event list (and of /api/events) from the request's arguments."""
    keys = ("site", "node", "since", "until", "label", "min_confidence", "max_confidence", "historical", "reviewed")
    form = {k: args.get(k, "").strip() for k in keys}
    errors: list[str] = []
    if form["label"] and form["label"] not in LABELS:
        errors.append(f"label = {form['label']!r}: allowed {', '.join(LABELS)}")
    try:
        page = max(1, int(args.get("page", "1")))
    except ValueError:
        errors.append(f"page = {args.get('page')!r}: expected a whole number >= 1")
        page = 1
    q = EventQuery(site=form["site"] or None, node=form["node"] or None,
                   since=_time(form["since"], "since", errors), until=_time(form["until"], "until", errors),
                   label=form["label"] if form["label"] in LABELS else None,
                   min_confidence=_number(form["min_confidence"], "min_confidence", errors),
                   max_confidence=_number(form["max_confidence"], "max_confidence", errors),
                   historical=_tristate(form["historical"], "historical", errors),
                   reviewed=_tristate(form["reviewed"], "reviewed", errors), limit=limit, offset=(page - 1) * limit)
    return Filters(q, form, tuple(errors), page)


# --------------------------------------------------------------------------- pages
@bp.route("/")
def index() -> Any:
    return redirect(url_for("views.nodes"))


@bp.route("/nodes")
def nodes() -> Any:
    return render_template("nodes.html", nodes=_store().list_nodes())


@bp.route("/events")
def events() -> Any:
    f = parse_filters(request.args, current_app.config["WEB"].page_size)
    store = _store()
    rows = store.query_events(f.query)
    total = store.count_events(f.query)
    pages = max(1, math.ceil(total / f.query.limit))
    args = {k: v for k, v in f.form.items() if v}
    return render_template("events.html", rows=rows, total=total, page=f.page, pages=pages, form=f.form,
                           errors=f.errors, labels=LABELS, nodes=store.list_nodes(), args=args), \
        400 if f.errors else 200


def _detail_or_404(event_id: str):
    detail = _store().get_event(event_id)
    if detail is None:
        abort(404)
    return detail


def feature_rows(event: EventRow, units: str | None) -> list[tuple[str, str, str]]:
    """(name, value, unit) of each feature, the waveform's units substituted."""
    out = []
    for name, value in sorted(event.features.items()):
        unit = FEATURE_UNITS.get(name, "").replace("{units}", units or "units")
        if isinstance(value, dict):
            text = ", ".join(f"{k}: {v:.3g}" if isinstance(v, int | float) else f"{k}: {v}" for k, v in value.items())
        elif isinstance(value, bool):
            text = "yes" if value else "no"
        elif isinstance(value, int | float):
            text = f"{value:.4g}"
        else:
            text = str(value)
        out.append((name, text, unit))
    return out


@bp.route("/events/<event_id>")
def event(event_id: str) -> Any:
    detail = _detail_or_404(event_id)
    form = RelabelForm(label=detail.event.current_label)
    units = detail.waveform.units if detail.waveform else None
    probs = sorted(detail.event.probabilities.items(), key=lambda kv: -kv[1])
    return render_template("event.html", d=detail, e=detail.event, form=form, probs=probs,
                           features=feature_rows(detail.event, units), units=units)


@bp.route("/events/<event_id>/relabel", methods=["POST"])
@requires("reviewer")
def relabel(event_id: str) -> Any:
    _detail_or_404(event_id)
    form = RelabelForm()
    if not form.validate_on_submit():
        flash("Relabel refused: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in form.errors.items()))
        return redirect(url_for("views.event", event_id=event_id)), 303
    change = _store().relabel(event_id, form.label.data, g.user.username, (form.note.data or "").strip())
    flash(f"{event_id}: {change.old_label} -> {change.new_label}")
    nxt = request.args.get("next")
    if nxt == "queue":
        return redirect(url_for("views.queue")), 303
    return redirect(url_for("views.event", event_id=event_id)), 303


PLOTS = {"waveform": plots.waveform_png, "spectrogram": plots.spectrogram_png}


@bp.route("/events/<event_id>/<any(waveform, spectrogram):kind>.png")
def plot_png(event_id: str, kind: str) -> Any:
    """The event's components or its spectrogram, as a PNG drawn on the server."""
    detail = _detail_or_404(event_id)
    if detail.waveform is None:
        abort(404)
    return Response(PLOTS[kind](detail.event, detail.waveform), mimetype="image/png")


@bp.route("/queue")
def queue() -> Any:
    store = _store()
    site = request.args.get("site") or None
    node = request.args.get("node") or None
    rows = store.review_queue(limit=current_app.config["WEB"].page_size, site=site, node=node)
    left = store.count_events(EventQuery(site=site, node=node, reviewed=False))
    return render_template("queue.html", rows=rows, left=left, site=site or "", node=node or "")


BUCKETS = ("day", "hour")


def _bucket() -> str:
    b = request.args.get("bucket", "day")
    if b not in BUCKETS:
        abort(400, f"bucket = {b!r}; allowed: {', '.join(BUCKETS)}")
    return b


@bp.route("/counts")
def counts() -> Any:
    store = _store()
    bucket = _bucket()
    by_label = store.counts("label", bucket)
    table: dict[str, int] = {}
    for r in by_label:
        table[r.key] = table.get(r.key, 0) + r.count
    return render_template("counts.html", bucket=bucket, buckets=BUCKETS, totals=sorted(table.items()))


@bp.route("/counts/<by>.png")
def counts_png(by: str) -> Any:
    if by not in ("label", "node"):
        abort(404)
    bucket = _bucket()
    rows = _store().counts(by, bucket)
    title = f"events per {'label (a reviewer’s, else the model’s)' if by == 'label' else 'node'} per {bucket}"
    return Response(plots.counts_png(rows, title), mimetype="image/png")


@bp.route("/alerts")
def alerts() -> Any:
    store = _store()
    return render_template("alerts.html", alerts=store.list_alerts(limit=200), missing=store.list_missing())


@bp.route("/audit")
@requires("admin")
def audit() -> Any:
    store = _store()
    return render_template("audit.html", entries=store.list_audit(limit=500), users=store.list_users())


# --------------------------------------------------------------------------- JSON API
def event_json(e: EventRow) -> dict:
    d = asdict(e)
    d["channels"] = list(e.channels)
    d["doubt_reasons"] = list(e.doubt_reasons)
    d["current_label"] = e.current_label
    return d


@api.route("/events")
def api_events() -> Any:
    try:
        limit = min(API_MAX, max(1, int(request.args.get("limit", "100"))))
    except ValueError:
        return jsonify({"error": f"limit = {request.args.get('limit')!r}; expected 1..{API_MAX}"}), 400
    f = parse_filters(request.args, limit)
    if f.errors:
        return jsonify({"error": "; ".join(f.errors)}), 400
    store = _store()
    return jsonify({"total": store.count_events(f.query), "page": f.page, "limit": limit,
                    "events": [event_json(e) for e in store.query_events(f.query)]})


@api.route("/events/<event_id>")
def api_event(event_id: str) -> Any:
    detail = _store().get_event(event_id)
    if detail is None:
        return jsonify({"error": f"no event {event_id!r}"}), 404
    wf = detail.waveform
    return jsonify({"event": event_json(detail.event),
                    "waveform": None if wf is None else {"start": wf.start, "fs": wf.fs, "channels": list(wf.channels),
                                                         "units": wf.units, "samples": int(wf.data.shape[1])},
                    "labels": [asdict(c) for c in detail.labels]})


@api.route("/nodes")
def api_nodes() -> Any:
    return jsonify({"nodes": [asdict(n) for n in _store().list_nodes()]})


@api.route("/queue")
def api_queue() -> Any:
    return jsonify({"events": [event_json(e) for e in _store().review_queue(limit=100)]})


def _json_errors(app: Any) -> None:
    for code in (400, 403, 404, 405, 413):
        def handler(exc: Any, code: int = code) -> Any:
            message = getattr(exc, "description", "") or str(exc)
            if request.path.startswith("/api/"):
                return jsonify({"error": message}), code
            return render_template("error.html", status=code, message=message), code
        app.register_error_handler(code, handler)


def install(app: Any) -> None:
    app.register_blueprint(bp)
    app.register_blueprint(api)
    _json_errors(app)

    @app.template_filter("pct")
    def _pct(value: float | None) -> str:
        return "–" if value is None else f"{100 * value:.2f} %"

    @app.template_filter("num")
    def _num(value: float | None, digits: int = 3) -> str:
        return "–" if value is None else f"{value:.{digits}g}"

    @app.template_filter("when")
    def _when(value: str | None) -> str:
        return "–" if not value else value.replace("T", " ")[:19]

    @app.template_filter("tojson_compact")
    def _tojson(value: Any) -> str:
        return json.dumps(value, sort_keys=True)

