"""The agent: framework-free request clock, outlier rule, storage and version detection."""

from __future__ import annotations

from .recorder import FlushMarker, Recorder
from .stats import OutlierRule, RunningStats
from .version import VersionInfo, detect_version
from .writer import Writer

__all__ = [
    "FlushMarker",
    "OutlierRule",
    "Recorder",
    "RunningStats",
    "VersionInfo",
    "Writer",
    "detect_version",
]
