"""The Flask face of flamewatch: ``from flamewatch.flask_plugin import Flamewatch``."""

from __future__ import annotations

from .agent import Agent
from .config import OPTIONS, ConfigError
from .extension import Flamewatch

__all__ = ["OPTIONS", "Agent", "ConfigError", "Flamewatch"]
