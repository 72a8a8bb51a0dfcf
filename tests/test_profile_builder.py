"""Samples to pyinstrument sessions: identifiers, time weights, unsampled time, thinning."""

from __future__ import annotations

import gc
import sys
import threading
from types import FrameType

import pytest
from pyinstrument.session import Session

from flamewatch.sampler.capture import Capturer, CaptureSettings
from flamewatch.sampler.frame_ids import UNSAMPLED, frame_identifier
from flamewatch.sampler.inflight import SAMPLING, Sample, Sampling, new_record
from flamewatch.sampler.profile_builder import build_session
from flamewatch.sampler.stack_sampler import MAX_DEPTH, current_frames, thin, walk_stack
from flamewatch.sampler.switching import SWITCH_INTERVAL

MS = 1_000_000


class Basket:
    def total(self) -> FrameType:
        return sys._getframe()


def outer() -> FrameType:
    return inner()


def inner() -> FrameType:
    return sys._getframe()


def _session(samples: list[Sample], end_ns: int, slack_ns: int | None = 0) -> Session:
    """The profile of ``samples``; ``slack_ns=None``: the builder's own slack."""
    return build_session(
        samples,
        t0_ns=0,
        end_ns=end_ns,
        start_time=1_700_000_000.0,
        thread_name="worker-1",
        thread_id=42,
        description="GET /x",
        min_interval_s=0.001,
        max_interval_s=0.01,
        slack_ns=slack_ns,
    )


def _by_leaf(session: Session) -> dict[str, float]:
    totals: dict[str, float] = {}
    for stack, seconds in session.frame_records:
        leaf = stack[-1].split("\x00", 1)[0]
        totals[leaf] = totals.get(leaf, 0.0) + seconds
    return totals


def test_identifiers_follow_pyinstruments_format() -> None:
    frame = Basket().total()
    identifier = frame_identifier(frame.f_code, 17)
    name, filename, rest = identifier.split("\x00")
    assert (name, filename) == ("total", __file__)
    first_line, *attributes = rest.split("\x01")
    assert int(first_line) == Basket.total.__code__.co_firstlineno
    assert attributes == (["cBasket", "l17"] if sys.version_info >= (3, 11) else ["l17"])


def test_stack_is_root_first_and_ends_at_the_sampled_frame() -> None:
    stack = walk_stack(outer())
    assert [code.co_name for code, _ in stack[-2:]] == ["outer", "inner"]


def test_deep_stacks_are_cut_with_a_truncated_frame() -> None:
    def recurse(n: int) -> FrameType:
        return recurse(n - 1) if n else sys._getframe()

    stack = walk_stack(recurse(MAX_DEPTH + 50))
    assert len(stack) == MAX_DEPTH + 1
    assert stack[-1][0].co_name == "[truncated]"


def test_weights_follow_the_rate_change_and_cover_the_request() -> None:
    a = walk_stack(outer())
    b = walk_stack(Basket().total())
    # low rate (10 ms) until the threshold at 25 ms, then high rate (1 ms)
    samples: list[Sample] = [(10 * MS, 10 * MS, a), (20 * MS, 10 * MS, a), (25 * MS, 10 * MS, b)]
    samples += [(25 * MS + i * MS, MS, b) for i in range(1, 31)]
    session = _session(samples, end_ns=56 * MS)
    totals = _by_leaf(session)
    # gaps split at their midpoints: 10 + 10 + 2.5 ms in a; 2.5 + 30 x 1 ms + 1 ms tail in b
    assert totals["inner"] == pytest.approx(0.0225)
    assert totals["total"] == pytest.approx(0.0335)
    assert sum(totals.values()) == pytest.approx(session.duration) == pytest.approx(0.056)
    assert session.sample_count == 33
    assert session.frame_records[0][0][0] == "worker-1\x00<thread>\x0042"


def test_late_samples_put_the_gap_on_unsampled_not_on_the_next_stack() -> None:
    a = walk_stack(outer())
    b = walk_stack(Basket().total())
    samples: list[Sample] = [(MS, MS, a), (2 * MS, MS, a), (102 * MS, MS, b)]
    session = _session(samples, end_ns=103 * MS, slack_ns=2 * MS)
    totals = _by_leaf(session)
    assert totals[UNSAMPLED.split("\x00")[0]] == pytest.approx(0.097)
    # 1 ms before the first sample, the 1 ms gap split, 1.5 of the 3 ms allowed around the gap
    assert totals["inner"] == pytest.approx(0.0035)
    assert totals["total"] == pytest.approx(0.0025)  # 1.5 ms of the allowance, 1 ms of tail
    assert sum(totals.values()) == pytest.approx(0.103)


def test_a_late_sample_in_the_same_functions_keeps_the_whole_gap() -> None:
    a = walk_stack(outer())
    a_other_line = tuple((code, line + 1) for code, line in a)  # same functions, moved on
    samples: list[Sample] = [(MS, MS, a), (2 * MS, MS, a), (102 * MS, MS, a_other_line)]
    session = _session(samples, end_ns=102 * MS, slack_ns=2 * MS)
    assert _by_leaf(session) == pytest.approx({"inner": 0.102})


def test_a_late_first_sample_is_allowed_the_process_switch_interval_while_it_is_lowered() -> None:
    """The first sample of a CPU-bound request waits for the GIL under the process's own
    switch interval; the profile may be built while the sampler holds it low for the next
    outlier, and must not judge the wait by that."""
    a = walk_stack(outer())
    b = walk_stack(Basket().total())
    normal = sys.getswitchinterval()
    late = int(normal * 1e9)  # a whole switch interval after the first sample was due
    samples: list[Sample] = [(10 * MS + late, 10 * MS, a), (11 * MS + late, MS, b)]
    SWITCH_INTERVAL.lower(0.000_25)
    try:
        assert sys.getswitchinterval() < normal
        session = _session(samples, end_ns=12 * MS + late, slack_ns=None)
    finally:
        SWITCH_INTERVAL.restore()
    assert sys.getswitchinterval() == normal
    totals = _by_leaf(session)
    assert UNSAMPLED.split("\x00")[0] not in totals
    assert totals["inner"] == pytest.approx((10 * MS + late + MS // 2) / 1e9)


def test_thinning_keeps_the_time_covered() -> None:
    a = walk_stack(outer())
    samples: list[Sample] = [(i * MS, MS, a) for i in range(1, 101)]
    before = _by_leaf(_session(list(samples), end_ns=100 * MS))
    thin(samples)
    assert len(samples) == 50
    assert all(interval == 2 * MS for _, interval, _ in samples)
    after = _by_leaf(_session(samples, end_ns=100 * MS))
    assert after == pytest.approx(before)
    assert UNSAMPLED.split("\x00")[0] not in after


def test_profile_over_the_size_cap_is_thinned_until_it_fits() -> None:
    def recurse(n: int) -> FrameType:
        return recurse(n - 1) if n else sys._getframe()

    stacks = [walk_stack(recurse(depth)) for depth in range(1, 150)]
    record = new_record("e", "/e", 0, 1, MS)
    samples = [(i * MS, MS, stacks[i % len(stacks)]) for i in range(1, 2001)]
    record[SAMPLING] = Sampling(samples, MS, 0)
    settings = CaptureSettings(max_profile_bytes=16 * 1024)
    capture = Capturer(settings, None, None).capture(
        record, 2001 * MS, started_at=0.0, facts={}, description="x"
    )
    assert capture.profile is not None
    assert len(capture.profile) <= 16 * 1024
    assert capture.note is not None
    assert capture.note.startswith("thinned to")
    assert capture.sample_count < 2000


@pytest.mark.parametrize("sampling", [None, Sampling([], MS, MS)], ids=["unseen", "not-due"])
def test_an_outlier_the_sampler_never_reached_has_no_profile(sampling: Sampling | None) -> None:
    record = new_record("e", "/e", 0, 1, MS)
    record[SAMPLING] = sampling
    capture = Capturer(CaptureSettings(), None, None).capture(
        record, 6 * MS, started_at=0.0, facts={"path": "/e"}, description="x"
    )
    assert capture.profile is None
    assert capture.note == "no sample: the request ended before the sampler came by"
    assert capture.request == {"path": "/e"}


def test_an_outlier_without_a_sampler_is_not_sampled() -> None:
    record = new_record("e", "/e", 0, 1, MS)
    capturer = Capturer(CaptureSettings(), None, None, sampling=False)
    capture = capturer.capture(record, 6 * MS, started_at=0.0, facts={}, description="x")
    assert (capture.profile, capture.note) == (None, "not sampled")


@pytest.mark.parametrize("enabled", [True, False], ids=["gc-on", "gc-off"])
def test_current_frames_runs_with_the_collector_paused_and_restores_it(
    enabled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a collection inside sys._current_frames() can hang the process (see current_frames)
    seen: list[bool] = []

    def recording() -> dict[int, FrameType]:
        seen.append(gc.isenabled())
        return {threading.get_ident(): sys._getframe()}

    monkeypatch.setattr(sys, "_current_frames", recording)
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        frames = current_frames()
        after = gc.isenabled()
    finally:
        (gc.enable if was else gc.disable)()
    assert seen == [False]
    assert after is enabled
    assert threading.get_ident() in frames
