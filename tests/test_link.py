"""The link assessment (edge.gateway.link): when the node is blind, degraded or ok, and why."""

from __future__ import annotations

from edge.gateway.link import ArmTracker, LinkCounts, LinkMonitor, assess_link

FS = 1000.0


def test_a_clean_link_is_ok():
    s = assess_link(LinkCounts(frames_ok=6000, samples_received=60_000, armed_samples=58_000,
                               warmup_samples=2000), 60.0)
    assert s.state == "ok" and s.reason is None and s.trigger_armed_pct == 100.0 and s.frames_lost_pct == 0.0


def test_every_gap_resetting_the_trigger_is_blind_and_says_why():
    s = assess_link(LinkCounts(frames_ok=1000, frames_lost=4500, crc_errors=4100, samples_received=10_000,
                               samples_missed=50_000, trigger_resets=900, armed_samples=600), 60.0)
    assert s.state == "blind"
    assert s.reason.startswith("trigger not armed 99 % of the last 60 s: 82 % of frames lost (CRC errors 4100)")
    assert "900 gaps reset the trigger" in s.reason


def test_concealed_losses_are_degraded_not_blind():
    s = assess_link(LinkCounts(frames_ok=3000, frames_lost=2000, crc_errors=1800, samples_received=36_000,
                               samples_missed=24_000, samples_concealed=22_000, trigger_resets=1,
                               armed_samples=34_000), 60.0)
    assert s.state == "degraded" and s.samples_concealed_pct == 36.7
    assert "40 % of frames lost" in s.reason and "1 gaps reset the trigger" in s.reason


def test_no_samples_is_blind():
    s = assess_link(LinkCounts(), 60.0)
    assert s.state == "blind" and s.reason == "no samples from the board in the last 60 s"


def test_nonsense_and_nan_frames_are_named():
    s = assess_link(LinkCounts(frames_ok=5990, rejected_frames=7, nonfinite_frames=3, samples_received=59_900,
                               samples_missed=30, samples_concealed=30, armed_samples=59_900), 60.0)
    assert s.state == "degraded"
    assert "7 frames with an impossible header" in s.reason and "3 frames of NaN/inf samples" in s.reason


def test_arm_tracker_follows_concealment_and_resets():
    arm = ArmTracker(FS, lta_s=0.5, conceal_gap_s=0.05)  # warm-up 500 samples, conceal up to 50
    arm.observe(0, 1000)  # start: 500 warming (not a fault), 500 armed
    assert (arm.warmup_samples, arm.armed_samples) == (500, 500)
    arm.observe(1040, 100)  # 40 missing: concealed, and the trigger armed across them
    assert arm.samples_concealed == 40 and arm.armed_samples == 640 and arm.trigger_resets == 0
    arm.observe(1240, 300)  # 100 missing: reset, 500 to warm up again (a fault: not start-up)
    assert arm.trigger_resets == 1 and arm.armed_samples == 640 and arm.warmup_samples == 500
    arm.observe(1560, 100)  # 20 missing while still warming up: concealed, not armed time
    assert arm.samples_concealed == 60 and arm.armed_samples == 640
    arm.observe(1660, 400)  # warm after 100 more: 300 armed
    assert arm.armed_samples == 940 and arm.trigger_resets == 1
    arm.restart(FS, 0.5, 0.05)  # a new pipeline (board restart): start-up warm-up again, counters go on
    arm.observe(0, 600)
    assert arm.warmup_samples == 1000 and arm.armed_samples == 1040


def test_monitor_keeps_the_last_window():
    mon = LinkMonitor(started=0.0, window_s=60.0)
    bad = LinkCounts(frames_ok=100, frames_lost=900, samples_received=1000, samples_missed=9000,
                     trigger_resets=100)
    assert mon.update(30.0, bad).state == "blind"
    for t in range(31, 200):  # then a clean link for minutes: the bad start leaves the window
        good = LinkCounts(frames_ok=bad.frames_ok + 100 * (t - 30), frames_lost=900,
                          samples_received=1000 + 1000 * (t - 30), samples_missed=9000, trigger_resets=100,
                          armed_samples=1000 * (t - 30))
        state = mon.update(float(t), good)
    assert state.state == "ok" and 59.0 <= state.window_s <= 61.0


def test_monitor_memory_stays_bounded_however_often_the_loop_turns():
    mon = LinkMonitor(started=0.0, window_s=60.0)
    for k in range(1, 100_001):  # 100 updates a second for 1000 s, as a busy daemon loop makes them
        t = k / 100.0
        state = mon.update(t, LinkCounts(frames_ok=k, samples_received=28 * k, armed_samples=28 * k))
    assert len(mon._snaps) <= 63
    assert state.state == "ok" and 59.0 <= state.window_s <= 61.0
