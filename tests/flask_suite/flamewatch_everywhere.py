"""A pytest plugin that attaches flamewatch to every Flask app a test suite creates.

Loaded with ``-p flamewatch_everywhere`` into Flask's own test suite by
``tests/test_flask_suite.py``: every ``Flask(...)`` gets ``Flamewatch(app)`` on a store named by
``FLAMEWATCH_SUITE_DATABASE``, and every agent is closed after each test, so that each test's
requests are written and no thread outlives it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from flamewatch.flask_plugin import Flamewatch
from flamewatch.flask_plugin.agent import _agents

#: read once: some of Flask's tests empty os.environ
DATABASE = os.environ["FLAMEWATCH_SUITE_DATABASE"]

_original_init = Flask.__init__


def _init_with_flamewatch(self: Flask, *args: Any, **kwargs: Any) -> None:
    _original_init(self, *args, **kwargs)
    Flamewatch(self, database=DATABASE, version="flask-suite")


Flask.__init__ = _init_with_flamewatch  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def _close_flamewatch() -> Iterator[None]:
    yield
    for agent in list(_agents):
        assert agent.close(10), "flamewatch could not write a test's requests"
