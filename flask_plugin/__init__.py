"""The Flask face of flamewatch: ``from flamewatch.flask_plugin import Flamewatch``.

The names are imported on first use (PEP 562): pytest imports this package for its entry
point (:mod:`.pytest_plugin`) in every test run of every project where flamewatch is
installed, and a run without ``--flamewatch`` must not pay for Flask, the agent or the store.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .agent import Agent
    from .config import OPTIONS, ConfigError
    from .extension import Flamewatch

__all__ = ["OPTIONS", "Agent", "ConfigError", "Flamewatch"]

_MODULE_OF = {
    "OPTIONS": ".config",
    "Agent": ".agent",
    "ConfigError": ".config",
    "Flamewatch": ".extension",
}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # looked up once
    return value
