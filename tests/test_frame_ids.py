"""Frame identifiers: what flamewatch writes, and pyinstrument's own, read back by one parser."""

from __future__ import annotations

import sys
import time
from types import FrameType

import pytest
from pyinstrument import Profiler

from flamewatch.sampler.frame_ids import (
    UNSAMPLED,
    frame_identifier,
    parse_frame_identifier,
    thread_root,
)


class Basket:
    def total(self) -> FrameType:
        return sys._getframe()


def plain() -> FrameType:
    return sys._getframe()


def test_a_written_method_frame_reads_back_with_its_class_and_lines() -> None:
    frame = Basket().total()
    parsed = parse_frame_identifier(frame_identifier(frame.f_code, 23))
    assert parsed.function == "total"
    assert parsed.file == __file__
    assert parsed.first_line == Basket.total.__code__.co_firstlineno
    assert parsed.line == "23"
    # the class comes from co_qualname, which Python has from 3.11 on
    owner = "Basket" if sys.version_info >= (3, 11) else ""
    assert parsed.owner == owner
    assert parsed.qualified_name == (f"{owner}.total" if owner else "total")
    assert not parsed.is_thread


def test_a_written_function_frame_has_no_owner() -> None:
    parsed = parse_frame_identifier(frame_identifier(plain().f_code, 1))
    assert (parsed.function, parsed.owner, parsed.qualified_name) == ("plain", "", "plain")


def test_a_thread_root_and_the_unsampled_frame_read_back() -> None:
    root = parse_frame_identifier(thread_root("worker-1", 42))
    assert root.is_thread
    assert (root.function, root.first_line) == ("worker-1", 42)
    unsampled = parse_frame_identifier(UNSAMPLED)
    assert (unsampled.function, unsampled.file, unsampled.first_line) == (
        "[unsampled]",
        "<flamewatch>",
        0,
    )


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


class Shop:
    def checkout(self) -> None:
        _busy(0.05)


def test_pyinstruments_own_identifiers_read_as_ours() -> None:
    """A session pyinstrument recorded itself names frames the way flamewatch does."""
    profiler = Profiler(interval=0.001)
    profiler.start()
    Shop().checkout()
    session = profiler.stop()
    parsed = [parse_frame_identifier(f) for stack, _ in session.frame_records for f in stack]
    checkout = next(p for p in parsed if p.function == "checkout")
    assert checkout.file == __file__
    assert checkout.first_line == Shop.checkout.__code__.co_firstlineno
    assert checkout.line.isdigit()
    if sys.version_info >= (3, 11):
        assert checkout.qualified_name == "Shop.checkout"


@pytest.mark.parametrize(
    ("identifier", "expected"),
    [
        pytest.param("", ("", "", None, "", ""), id="empty"),
        pytest.param("f", ("f", "", None, "", ""), id="function-only"),
        pytest.param("f\x00a.py\x00x\x01lq", ("f", "a.py", None, "", "q"), id="not-a-number"),
        pytest.param("f\x00a.py\x003\x01c\x01cK\x01", ("f", "a.py", 3, "K", ""), id="empty-attrs"),
        pytest.param("\x01\x01\x00", ("", "", None, "", ""), id="separators-only"),
    ],
)
def test_a_damaged_identifier_is_read_as_far_as_it_goes(
    identifier: str, expected: tuple[str, str, int | None, str, str]
) -> None:
    assert tuple(parse_frame_identifier(identifier)) == expected
