"""The version label of the deployed code, detected once at start.

Every stored request carries this label, so reports can compare versions. The first source
that gives a label wins:

1. ``explicit``: the label set in the configuration (``source="config"``);
2. git: the commit of ``HEAD``, shortened to 12 hex characters (``source="git"``), read from
   the files of the ``.git`` directory without running ``git``;
3. the first non-empty variable of :data:`GIT_ENV_VARIABLES` set by a CI or hosting platform
   (``source="env:<VARIABLE>"``);
4. ``"unknown"`` (``source="unknown"``).

Detection never raises for unreadable or malformed files: it logs one DEBUG message on the
``flamewatch`` logger and falls through to the next source.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path

__all__ = [
    "GIT_ENV_VARIABLES",
    "TEST_SOURCE",
    "VersionInfo",
    "detect_version",
    "flamewatch_version",
    "read_git_commit",
]

_log = logging.getLogger("flamewatch")

#: the source of a version recorded by a test run (``pytest --flamewatch``), not a deployment:
#: reports compare a test run with test runs and a deployment with deployments unless asked
TEST_SOURCE = "tests"

GIT_ENV_VARIABLES: tuple[str, ...] = (
    "SOURCE_VERSION",  # Heroku (build)
    "HEROKU_SLUG_COMMIT",  # Heroku (dyno metadata)
    "GITHUB_SHA",  # GitHub Actions
    "CI_COMMIT_SHA",  # GitLab CI
    "CIRCLE_SHA1",  # CircleCI
    "TRAVIS_COMMIT",  # Travis CI
    "BUILDKITE_COMMIT",  # Buildkite
    "BITBUCKET_COMMIT",  # Bitbucket Pipelines
    "DRONE_COMMIT_SHA",  # Drone
    "RENDER_GIT_COMMIT",  # Render
    "RAILWAY_GIT_COMMIT_SHA",  # Railway
    "VERCEL_GIT_COMMIT_SHA",  # Vercel
    "KOYEB_GIT_SHA",  # Koyeb
    "COMMIT_REF",  # Netlify
    "GIT_COMMIT",  # Jenkins
    "K_REVISION",  # Cloud Run (a revision name, not a commit)
    "GAE_VERSION",  # App Engine (a version name, not a commit)
)

_SHORT_SHA_LENGTH = 12
_MAX_ENV_LABEL_LENGTH = 100
_MAX_SYMREF_DEPTH = 5
_COMMIT_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_HEX_LABEL = re.compile(r"[0-9a-fA-F]{12,}")


@dataclass(frozen=True)
class VersionInfo:
    """A version label and where it came from."""

    label: str
    source: str  # "config", "git", "env:<VARIABLE>" or "unknown"


class _Unreadable(Exception):
    """The repository's files do not give a commit; the message says why."""


def detect_version(
    explicit: str | None = None,
    *,
    git_path: str | os.PathLike[str] | None = None,
    root_path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> VersionInfo:
    """Return the version label from the first source that has one (see the module doc).

    ``git_path`` names the repository itself (a work tree, a ``.git`` directory or a ``.git``
    file); without it the repository is searched upward from ``root_path``. With neither,
    git is skipped. An empty ``git_path`` raises ``ValueError``.
    """
    if git_path is not None and not os.fspath(git_path).strip():
        raise ValueError(  # Path("") is the current directory: never what was meant
            "git_path is empty; pass None to search upward from root_path, or the repository's"
            " directory"
        )
    if explicit is not None and explicit.strip():
        return VersionInfo(explicit.strip(), "config")
    commit = None
    if git_path is not None:
        commit = _read_commit(git_path, search_parents=False)
    elif root_path is not None:
        commit = _read_commit(root_path, search_parents=True)
    if commit is not None:
        return VersionInfo(commit[:_SHORT_SHA_LENGTH], "git")
    env = os.environ if environ is None else environ
    for name in GIT_ENV_VARIABLES:
        value = env.get(name, "").strip()
        if value:
            return VersionInfo(_env_label(value), f"env:{name}")
    return VersionInfo("unknown", "unknown")


def read_git_commit(start: str | os.PathLike[str]) -> str | None:
    """Return the full commit of ``HEAD`` of the repository at or above ``start``, or None."""
    return _read_commit(start, search_parents=True)


def _env_label(value: str) -> str:
    if _HEX_LABEL.fullmatch(value):
        return value[:_SHORT_SHA_LENGTH].lower()
    return value[:_MAX_ENV_LABEL_LENGTH]


def _read_commit(start: str | os.PathLike[str], *, search_parents: bool) -> str | None:
    try:
        git_dir = _find_git_dir(Path(start).resolve(), search_parents=search_parents)
        if git_dir is None:
            raise _Unreadable("no git repository found")
        return _head_commit(git_dir)
    except (_Unreadable, OSError, RuntimeError, ValueError) as error:
        _log.debug("no git commit for version detection from %s: %s", start, error)
        return None


def _find_git_dir(start: Path, *, search_parents: bool) -> Path | None:
    candidates = [start, *start.parents] if search_parents else [start]
    for directory in candidates:
        git_dir = _git_dir_at(directory)
        if git_dir is not None:
            return git_dir
    return None


def _git_dir_at(path: Path) -> Path | None:
    """The git directory that ``path`` is, or that its ``.git`` names; None if neither."""
    if path.name == ".git" and path.is_file():
        return _follow_git_file(path)
    if (path / "HEAD").is_file() and (
        (path / "objects").is_dir() or (path / "commondir").is_file()
    ):
        return path
    dot_git = path / ".git"
    if dot_git.is_dir():
        return dot_git
    if dot_git.is_file():
        return _follow_git_file(dot_git)
    return None


def _follow_git_file(git_file: Path) -> Path:
    """Follow a ``.git`` file (``gitdir: <path>``), as in worktrees and submodules."""
    content = _read_required(git_file).strip()
    if not content.startswith("gitdir:"):
        raise _Unreadable(f"{git_file} does not start with 'gitdir:'")
    return git_file.parent / content.removeprefix("gitdir:").strip()


def _head_commit(git_dir: Path) -> str:
    common_dir = _common_dir(git_dir)
    if _uses_reftable(common_dir):
        raise _Unreadable(f"{common_dir} stores refs in a reftable, which is not read")
    head = _read_required(git_dir / "HEAD").strip()
    target = _symref_target(head)
    if target is None:
        return _valid_sha(head, git_dir / "HEAD")
    return _resolve_ref(target, git_dir, common_dir)


def _common_dir(git_dir: Path) -> Path:
    """Where shared refs live: the main ``.git`` for a worktree, else the git dir itself."""
    commondir = _read_optional(git_dir / "commondir")
    return git_dir if commondir is None else git_dir / commondir.strip()


def _uses_reftable(common_dir: Path) -> bool:
    if (common_dir / "reftable").is_dir():
        return True
    section = ""
    for raw_line in (_read_optional(common_dir / "config") or "").splitlines():
        line = raw_line.split("#", 1)[0].split(";", 1)[0].strip()
        if line.startswith("["):
            section = line.strip("[] \t").lower()
        elif section == "extensions" and "=" in line:
            key, _, value = line.partition("=")
            if key.strip().lower() == "refstorage":
                return value.strip().strip('"').lower() == "reftable"
    return False


def _resolve_ref(ref: str, git_dir: Path, common_dir: Path) -> str:
    """Resolve ``ref`` through loose ref files, symbolic refs and ``packed-refs``."""
    seen: set[str] = set()
    for _ in range(_MAX_SYMREF_DEPTH):
        if ref in seen:
            raise _Unreadable(f"symbolic ref loop at {ref}")
        seen.add(ref)
        if not _is_safe_ref_name(ref):
            raise _Unreadable(f"unexpected ref name {ref!r}")
        content = _read_loose_ref(ref, git_dir, common_dir)
        if content is None:
            return _packed_ref(ref, common_dir)
        target = _symref_target(content)
        if target is None:
            return _valid_sha(content, ref)
        ref = target
    raise _Unreadable(f"symbolic refs nested deeper than {_MAX_SYMREF_DEPTH} levels")


def _read_loose_ref(ref: str, git_dir: Path, common_dir: Path) -> str | None:
    for base in dict.fromkeys((git_dir, common_dir)):  # per-worktree refs first
        content = _read_optional(base / ref)
        if content is not None:
            return content.strip()
    return None


def _packed_ref(ref: str, common_dir: Path) -> str:
    for line in (_read_optional(common_dir / "packed-refs") or "").splitlines():
        if line.startswith(("#", "^")):
            continue
        sha, _, name = line.strip().partition(" ")
        if name == ref:
            return _valid_sha(sha, f"{ref} in packed-refs")
    raise _Unreadable(f"{ref} has no commit (unborn branch?)")


def _symref_target(content: str) -> str | None:
    return content.removeprefix("ref:").strip() if content.startswith("ref:") else None


def _is_safe_ref_name(ref: str) -> bool:
    parts = ref.split("/")
    return ref.startswith("refs/") and all(part not in ("", ".", "..") for part in parts)


def _valid_sha(text: str, where: str | Path) -> str:
    sha = text.strip().lower()
    if not _COMMIT_SHA.fullmatch(sha):
        raise _Unreadable(f"{where} does not hold a commit id: {text[:80]!r}")
    return sha


def _read_optional(path: Path) -> str | None:
    """The text of ``path``, or None when it does not exist."""
    try:
        return path.read_text(encoding="utf-8", errors="surrogateescape")
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as error:
        raise _Unreadable(f"cannot read {path}: {error}") from error


def _read_required(path: Path) -> str:
    content = _read_optional(path)
    if content is None:
        raise _Unreadable(f"{path} does not exist")
    return content


def flamewatch_version() -> str:
    """flamewatch's own installed version (not the monitored app's, which
    :func:`detect_version` finds), as the report pages and each stored process's agent name
    it."""
    try:
        return package_version("flamewatch")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"
