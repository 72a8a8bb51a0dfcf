"""A page reads what it shows: one endpoint's numbers read for that endpoint alone
(``ReportData(endpoint=...)``, as the live dashboard's endpoint page reads them) are the ones
the whole store's reading gives for it, on both backends; and a site reads its parts lazily."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import pytest
from test_report_accuracy import ENDPOINTS, START, write_store

from flamewatch.reports.aggregate import ReportData
from flamewatch.reports.site import endpoint_page, read_site
from flamewatch.reports.summary import open_readonly

NOW = START + 3 * 86_400


def same(found: Any) -> Any:
    """``found`` with every float to 12 digits: a mean from the buckets is a float sum whose
    last bits depend on the order the rows were read in (the key's order for one endpoint,
    the table's for all)."""
    if isinstance(found, float):
        return float(f"{found:.12g}")
    if dataclasses.is_dataclass(found) and not isinstance(found, type):
        return dataclasses.replace(
            found, **{f.name: same(getattr(found, f.name)) for f in dataclasses.fields(found)}
        )
    if isinstance(found, dict):
        return {key: same(value) for key, value in found.items()}
    if isinstance(found, list | tuple):
        return type(found)(same(value) for value in found)
    return found


@pytest.fixture
def database(store_db: Path | str) -> Path | str:
    write_store(store_db)
    return store_db


def test_one_endpoint_read_alone_equals_its_part_of_the_whole(database: Path | str) -> None:
    with open_readonly(str(database)) as conn:
        whole = ReportData(conn, now=NOW, max_groups=3)
        rows = {row.name: row for row in whole.endpoints()}
        assert set(ENDPOINTS) <= set(rows)
        for name in ENDPOINTS:
            alone = ReportData(conn, now=NOW, max_groups=3, endpoint=name)
            assert same(alone.endpoints()) == same([rows[name]])
            assert same(alone.boxes_by_version()) == same({name: whole.boxes_by_version()[name]})
            assert same(alone.boxes_by_group()) == same({name: whole.boxes_by_group()[name]})
            assert same(alone.boxes_by_group_version()) == same(
                {name: whole.boxes_by_group_version()[name]}
            )
            assert alone.hourly_hits() == [h for h in whole.hourly_hits() if h.endpoint == name]
            assert alone.changes() == [c for c in whole.changes() if c.endpoint == name]
            assert alone.request_counts() == (rows[name].hits, rows[name].outliers)
        nobody = ReportData(conn, now=NOW, endpoint="no.such.endpoint")
        assert (nobody.endpoints(), nobody.boxes_by_version(), nobody.changes()) == ([], {}, [])
        assert whole.request_counts() == (
            sum(r.hits for r in rows.values()),
            sum(r.outliers for r in rows.values()),
        )


def test_a_live_endpoint_page_shows_what_the_static_one_shows(database: Path | str) -> None:
    """The live site reads the endpoint alone, the static one takes its part of the whole:
    the two pages are the same but for the dashboard's own links."""
    now = time.time()
    live = read_site(str(database), now=now, max_groups=3, live=True)
    static = read_site(str(database), now=now, max_groups=3)
    for name in ENDPOINTS:
        path = endpoint_page(name)
        live_view, static_view = (
            live.reading.endpoint_view(name),
            static.reading.endpoint_view(name),
        )
        assert same(live_view) == same(static_view)
        assert "by-group-version" in live.render(path, "/flamewatch/")
    assert "endpoints" not in live.reading._found  # no page so far needed the endpoint table
