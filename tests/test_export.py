"""Exports of pyinstrument sessions: read back by pyinstrument, valid for speedscope, a page."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pyinstrument import Profiler
from pyinstrument.renderers.speedscope import SpeedscopeRenderer
from pyinstrument.session import Session

from flamewatch.reports.export import (
    FORMATS,
    export_profile,
    to_html,
    to_pyisession,
    to_speedscope,
)

THREAD_ROOT = "MainThread\x00<thread>\x00140000"
UNSAMPLED = "[unsampled]\x00<flamewatch>\x000"  # flamewatch's frame for unattributed time


def crunch_numbers_slowly() -> int:
    total, deadline = 0, time.perf_counter() + 0.05
    while time.perf_counter() < deadline:
        total += sum(range(100))
    return total


def nap_for_a_while() -> None:
    time.sleep(0.03)


@pytest.fixture(scope="module")
def real_session() -> Session:
    profiler = Profiler(interval=0.001)
    profiler.start()
    crunch_numbers_slowly()
    nap_for_a_while()
    session = profiler.stop()
    assert session.frame_records
    return session


@pytest.fixture
def made_session() -> Session:
    view = "handle_order\x00/app/views.py\x0010\x01l12"
    method = "total\x00/app/models.py\x0040\x01cOrder\x01l44"
    records: list[tuple[list[str], float]] = [
        ([THREAD_ROOT, view, method], 0.030),
        ([THREAD_ROOT, view], 0.005),
        ([THREAD_ROOT, UNSAMPLED], 0.012),
        ([THREAD_ROOT, view, "sleep\x00<built-in>\x000"], 0.003),
    ]
    return Session(
        frame_records=records,
        start_time=1_700_000_000.0,
        duration=0.05,
        min_interval=0.001,
        max_interval=0.004,
        sample_count=4,
        start_call_stack=[THREAD_ROOT],
        target_description="GET /orders/</script><script>alert(1)</script>",
        cpu_time=0.03,
        sys_path=["/app"],
        sys_prefixes=Session.current_sys_prefixes(),
    )


def _validator(schema: dict[str, Any]) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(schema)


def _frame_names(document: dict[str, Any]) -> list[str]:
    return [frame["name"] for frame in document["shared"]["frames"]]


def _total(session: Session) -> float:
    return sum(seconds for _, seconds in session.frame_records)


# -- pyisession ------------------------------------------------------------------------------


def test_pyisession_loads_back(real_session: Session, tmp_path: Path) -> None:
    path = tmp_path / "profile.pyisession"
    path.write_bytes(to_pyisession(real_session))
    loaded = Session.load(path)
    assert [(stack, t) for stack, t in loaded.frame_records] == real_session.frame_records
    assert loaded.duration == real_session.duration
    assert loaded.target_description == real_session.target_description


def test_pyinstrument_command_reads_pyisession(real_session: Session, tmp_path: Path) -> None:
    path = tmp_path / "profile.pyisession"
    path.write_bytes(export_profile(real_session, "pyisession"))
    cmd = [sys.executable, "-m", "pyinstrument", "--load", str(path), "-r", "text"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "crunch_numbers_slowly" in done.stdout


def test_made_session_loads_back(made_session: Session, tmp_path: Path) -> None:
    path = tmp_path / "made.pyisession"
    path.write_bytes(to_pyisession(made_session))
    root = Session.load(path).root_frame()
    assert root is not None
    assert root.time == pytest.approx(_total(made_session))


# -- speedscope ------------------------------------------------------------------------------


def test_speedscope_is_valid(real_session: Session, speedscope_schema: dict[str, Any]) -> None:
    document = json.loads(export_profile(real_session, "speedscope"))
    _validator(speedscope_schema).validate(document)
    assert document["exporter"] == "flamewatch"
    assert document["$schema"] == "https://www.speedscope.app/file-format-schema.json"
    assert "crunch_numbers_slowly" in _frame_names(document)
    assert "nap_for_a_while" in _frame_names(document)
    assert "MainThread" in _frame_names(document)


def test_speedscope_weights_add_up(real_session: Session) -> None:
    (profile,) = json.loads(to_speedscope(real_session))["profiles"]
    assert profile["type"] == "sampled"
    assert profile["unit"] == "seconds"
    assert profile["startValue"] == 0
    assert len(profile["samples"]) == len(profile["weights"]) == len(real_session.frame_records)
    assert sum(profile["weights"]) == pytest.approx(_total(real_session), rel=1e-12)
    assert profile["endValue"] == pytest.approx(_total(real_session), rel=1e-12)
    root = real_session.root_frame(trim_stem=False)
    assert root is not None
    assert sum(profile["weights"]) == pytest.approx(root.time, rel=1e-9)


def test_speedscope_of_made_session(
    made_session: Session, speedscope_schema: dict[str, Any]
) -> None:
    document = json.loads(to_speedscope(made_session, name="orders"))
    _validator(speedscope_schema).validate(document)
    assert document["name"] == document["profiles"][0]["name"] == "orders"
    frames = document["shared"]["frames"]
    assert frames == [
        {"name": "MainThread"},
        {"name": "handle_order", "file": "/app/views.py", "line": 10},
        {"name": "Order.total", "file": "/app/models.py", "line": 40},
        {"name": "[unsampled]", "file": "<flamewatch>"},
        {"name": "sleep", "file": "<built-in>"},
    ]
    (profile,) = document["profiles"]
    assert profile["samples"] == [[0, 1, 2], [0, 1], [0, 3], [0, 1, 4]]
    assert profile["weights"] == [0.030, 0.005, 0.012, 0.003]
    assert profile["endValue"] == pytest.approx(0.05)


def test_speedscope_keeps_tiny_frames(made_session: Session) -> None:
    made_session.frame_records.append(([THREAD_ROOT, "blip\x00/app/x.py\x001"], 1e-7))
    document = json.loads(to_speedscope(made_session))
    assert "blip" in _frame_names(document)
    assert document["name"] == made_session.target_description


def test_pyinstrument_speedscope_renderer_is_invalid(
    real_session: Session, speedscope_schema: dict[str, Any]
) -> None:
    """Why we write our own: pyinstrument's output has ``"activeProfileIndex": null``."""
    document = json.loads(SpeedscopeRenderer().render(real_session))
    errors = list(_validator(speedscope_schema).iter_errors(document))
    assert errors
    assert any(list(error.path) == ["activeProfileIndex"] for error in errors)


# -- html ------------------------------------------------------------------------------------


def test_html_is_a_full_page(real_session: Session) -> None:
    page = export_profile(real_session, "html").decode("utf-8")
    assert page.lstrip().startswith("<!DOCTYPE html>")
    assert page.rstrip().endswith("</html>")
    assert "crunch_numbers_slowly" in page
    assert "pyinstrumentHTMLRenderer.render" in page


def test_html_keeps_script_text_inside_the_data(made_session: Session) -> None:
    page = to_html(made_session).decode("utf-8")
    assert "<script>alert(1)" not in page
    assert "\\u003c/script>\\u003cscript>alert(1)" in page
    data = page[page.rindex("const sessionData = ") :].split(";\n", 1)[0]
    session_data = json.loads(data.removeprefix("const sessionData = "))
    assert session_data["session"]["target_description"] == made_session.target_description
    assert "Order" in json.dumps(session_data["frame_tree"])


def test_html_of_a_huge_session_is_resampled_quietly(
    made_session: Session, capfd: pytest.CaptureFixture[str]
) -> None:
    stack = [THREAD_ROOT, "tick\x00/app/loop.py\x007"]
    made_session.frame_records = [(stack, 0.0001)] * 120_000
    made_session.duration = 12.0
    page = to_html(made_session).decode("utf-8")
    assert "tick" in page
    assert capfd.readouterr().err == ""  # pyinstrument would print a note on stderr


def test_empty_session(made_session: Session, speedscope_schema: dict[str, Any]) -> None:
    made_session.frame_records = []
    document = json.loads(to_speedscope(made_session))
    _validator(speedscope_schema).validate(document)
    assert document["profiles"][0]["endValue"] == 0
    assert to_html(made_session).startswith(b"<!DOCTYPE html>")


# -- dispatch --------------------------------------------------------------------------------


def test_formats_dispatch(made_session: Session) -> None:
    assert FORMATS == ("pyisession", "speedscope", "html")
    assert export_profile(made_session, "speedscope") == to_speedscope(made_session)
    assert export_profile(made_session, "pyisession") == to_pyisession(made_session)


def test_unknown_format_names_the_accepted_ones(made_session: Session) -> None:
    with pytest.raises(ValueError, match="pyisession, speedscope, html") as caught:
        export_profile(made_session, "flamegraph")
    assert "'flamegraph'" in str(caught.value)


def test_html_viewer_loads_no_web_fonts(made_session: Session) -> None:
    page = to_html(made_session).decode()
    assert "fonts.googleapis.com" not in page
    assert "data:text/css," in page  # the font stylesheet is an empty, local one
