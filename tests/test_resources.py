"""CPU and memory readings: taken by the writer about once a second while requests come in."""

from __future__ import annotations

from flamewatch.sampler.resources import ResourceMonitor


def test_readings_follow_activity_and_a_quiet_process_reads_nothing() -> None:
    monitor = ResourceMonitor()
    assert monitor.read_if_due(activity=0, in_flight=False)  # the first round reads
    assert monitor.before(2**62) is not None
    assert not monitor.read_if_due(activity=5, in_flight=True)  # within the second
    assert not monitor.read_if_due(activity=0, in_flight=False, interval_ns=0)  # quiet
    assert monitor.read_if_due(activity=0, in_flight=True, interval_ns=0)  # a long request
    assert monitor.read_if_due(activity=3, in_flight=False, interval_ns=0)  # requests ended
    assert not monitor.read_if_due(activity=3, in_flight=False, interval_ns=0)
