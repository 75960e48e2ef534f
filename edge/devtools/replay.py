"""``stopewatch replay``: the daemon's exact pipeline over a recorded stream, without serial or MQTT."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np

from edge.devtools.scoring import score_events
from edge.errors import UserError
from edge.formats import read_stream
from edge.gateway.config import Config, check_trigger_fit
from edge.gateway.messages import EventContext, EventMessenger, Timing, new_boot_id
from edge.gateway.model import Classifier, rate_refusal, trigger_limits
from edge.gateway.pipeline import Pipeline, fixed_clock
from edge.gateway.streams import StreamCodes, stream_codes
from firmware_bridge.clock import parse_utc


def replay(cfg: Config, stream_path: str | Path, events_out: str | Path | None = None,
           block_s: float = 0.1, classifier: Classifier | None = None, after_s: float = 1.5) -> dict:
    """Run the pipeline over a stream file; write event messages as JSON lines; score against its truth
    (a trigger up to ``after_s`` after an onset detects it).

    Returns {"messages": [...], "stats": PipelineStats, "score": dict or None, "seconds": float}.
    """
    stream = read_stream(stream_path)
    classifier = classifier or Classifier(cfg.model.path, num_threads=cfg.model.threads)
    if isinstance(classifier, Classifier):  # the daemon's refusals, with the stream as the board
        refusal = rate_refusal(classifier.card, stream.fs)
        if refusal is not None:
            raise UserError(f"{stream_path}: {refusal}")
        check_trigger_fit(cfg, *trigger_limits(classifier.card, stream.fs, stream.data.shape[0],
                                               board_name=f"the stream {Path(stream_path).name}"))
    bad = ~np.isfinite(stream.data)
    if bad.any():  # the daemon conceals such samples as gaps; a replay has no such part: refused, not blinded
        first = int(np.flatnonzero(bad.any(axis=0))[0])
        raise UserError(f"{stream_path}: key 'data' holds {int(bad.sum())} NaN or infinite sample(s), the first "
                        f"at sample {first}; replay takes finite samples only")
    if not (block_s > 0 and block_s * stream.fs < 2**31):
        raise UserError(f"block_s = {block_s!r}; expected a positive number of seconds")
    start = parse_utc(stream.start_time)
    pipeline = Pipeline(cfg.trigger, classifier, stream.fs, [str(c) for c in stream.channels],
                        fixed_clock(start, stream.fs))
    messenger = EventMessenger(cfg.node.site, cfg.node.node, new_boot_id(), classifier.identity)
    block = max(1, round(block_s * stream.fs))
    events = []
    n = stream.data.shape[1]
    for at in range(0, n, block):
        events += pipeline.feed(stream.data[:, at:at + block], at)
    events += pipeline.flush()
    context = EventContext(_replay_codes(cfg, stream.fs, [str(c) for c in stream.channels]), cfg.board.units,
                           Timing("record", None, 0), None)
    messages = [messenger.message(e, context) for e in events]
    if events_out is not None:
        with open(events_out, "w") as f:
            for m in messages:
                f.write(json.dumps(m, separators=(",", ":")) + "\n")
    score = None
    if stream.event_onsets is not None:
        score = score_events(stream.event_onsets, stream.event_labels, stream.event_snr_db,
                             [e.trigger_sample for e in events], [m["label"] for m in messages],
                             stream.fs, n / stream.fs, after_s=after_s)
    return {"messages": messages, "stats": pipeline.stats, "score": score, "seconds": n / stream.fs}


def _replay_codes(cfg: Config, fs: float, names: list[str]) -> StreamCodes | None:
    """The stream codes of a recorded stream: the record's own one-letter channel names as orientation codes
    (Z, N, E, 1, 2 ...) unless [stream] sets them; None when no SEED code fits (the events say so)."""
    stream = cfg.stream
    if not stream.orientation and all(re.fullmatch(r"[A-Z0-9]", n) for n in names):
        stream = dataclasses.replace(stream, orientation="".join(names))
    try:
        return stream_codes(stream, fs, len(names), cfg.source)
    except UserError:
        return None
