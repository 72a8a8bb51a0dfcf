"""Version detection, tested on real repositories made with the ``git`` command."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import pytest

from flamewatch.sampler.version import (
    GIT_ENV_VARIABLES,
    VersionInfo,
    detect_version,
    read_git_commit,
)

SHA_A = "0123456789abcdef0123456789abcdef01234567"


class Git:
    """Runs the real ``git`` with no system or user configuration."""

    def __init__(self, home: Path) -> None:
        self.env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
        self.env.update(GIT_CONFIG_NOSYSTEM="1", HOME=str(home), XDG_CONFIG_HOME=str(home))

    def __call__(self, cwd: Path, *args: str) -> str:
        config = ["-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
        config += ["-c", "commit.gpgsign=false", "-c", "protocol.file.allow=always"]
        completed = subprocess.run(
            ["git", *config, *args],
            cwd=cwd,
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        )
        return completed.stdout.strip()

    def commit(self, cwd: Path, message: str) -> str:
        self(cwd, "commit", "--quiet", "--allow-empty", "--message", message)
        return self(cwd, "rev-parse", "HEAD")


@pytest.fixture
def git(tmp_path: Path) -> Git:
    return Git(tmp_path)


@pytest.fixture
def repo(git: Git, tmp_path: Path) -> Path:
    """A work tree on branch ``main`` with one commit."""
    git(tmp_path, "init", "--quiet", "repo")
    git.commit(tmp_path / "repo", "first")
    return tmp_path / "repo"


def from_git(path: Path) -> VersionInfo:
    return detect_version(git_path=path, environ={})


# --- explicit configuration ---------------------------------------------------------------


def test_explicit_version_wins_over_git_and_environment_and_is_stripped(repo: Path) -> None:
    info = detect_version("  v1.2.3 \n", git_path=repo, environ={"GITHUB_SHA": SHA_A})
    assert info == VersionInfo("v1.2.3", "config")


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_blank_explicit_version_is_ignored(blank: str, git: Git, repo: Path) -> None:
    info = detect_version(blank, git_path=repo, environ={})
    assert info == VersionInfo(git(repo, "rev-parse", "HEAD")[:12], "git")


# --- git ----------------------------------------------------------------------------------


def test_loose_branch_ref_gives_head_commit(git: Git, repo: Path) -> None:
    assert (repo / ".git" / "refs" / "heads" / "main").is_file()
    commit = git(repo, "rev-parse", "HEAD")
    assert read_git_commit(repo) == commit
    assert from_git(repo) == VersionInfo(commit[:12], "git")


def test_packed_refs_are_used_when_the_loose_ref_is_gone(git: Git, repo: Path) -> None:
    git(repo, "pack-refs", "--all")
    assert not (repo / ".git" / "refs" / "heads" / "main").exists()
    assert read_git_commit(repo) == git(repo, "rev-parse", "HEAD")


def test_packed_refs_skip_peeled_tag_lines(git: Git, repo: Path) -> None:
    git(repo, "tag", "--annotate", "--message", "release", "v1")
    git(repo, "pack-refs", "--all")
    assert "\n^" in (repo / ".git" / "packed-refs").read_text()
    assert read_git_commit(repo) == git(repo, "rev-parse", "HEAD")


def test_detached_head_gives_its_commit(git: Git, repo: Path) -> None:
    first = git(repo, "rev-parse", "HEAD")
    git.commit(repo, "second")
    git(repo, "checkout", "--quiet", "--detach", first)
    assert (repo / ".git" / "HEAD").read_text().strip() == first
    assert read_git_commit(repo) == first


@pytest.mark.parametrize("packed", [False, True], ids=["loose", "packed"])
def test_branch_name_with_slash_is_resolved(packed: bool, git: Git, repo: Path) -> None:
    main_commit = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "--quiet", "-b", "feature/x")
    feature_commit = git.commit(repo, "on feature")
    if packed:
        git(repo, "pack-refs", "--all")
    assert read_git_commit(repo) == feature_commit != main_commit


def test_symbolic_ref_chain_is_followed(git: Git, repo: Path) -> None:
    git(repo, "symbolic-ref", "refs/heads/alias", "refs/heads/main")
    git(repo, "symbolic-ref", "HEAD", "refs/heads/alias")
    assert read_git_commit(repo) == git(repo, "rev-parse", "HEAD")


def test_symbolic_ref_loop_gives_none(git: Git, repo: Path) -> None:
    git(repo, "symbolic-ref", "refs/heads/loop1", "refs/heads/loop2")
    git(repo, "symbolic-ref", "refs/heads/loop2", "refs/heads/loop1")
    git(repo, "symbolic-ref", "HEAD", "refs/heads/loop1")
    assert read_git_commit(repo) is None


def test_sha256_repository_gives_64_hex_commit(git: Git, tmp_path: Path) -> None:
    git(tmp_path, "init", "--quiet", "--object-format=sha256", "repo256")
    commit = git.commit(tmp_path / "repo256", "first")
    assert len(commit) == 64
    assert read_git_commit(tmp_path / "repo256") == commit


def test_upward_search_finds_repository_from_nested_directory(git: Git, repo: Path) -> None:
    nested = repo / "src" / "app" / "static"
    nested.mkdir(parents=True)
    info = detect_version(root_path=nested, environ={})
    assert info == VersionInfo(git(repo, "rev-parse", "HEAD")[:12], "git")


def test_worktree_gives_its_own_commit_not_the_main_trees(git: Git, repo: Path) -> None:
    worktree = repo.parent / "wt"
    git(repo, "worktree", "add", "--quiet", "-b", "other", str(worktree))
    worktree_commit = git.commit(worktree, "in worktree")
    main_commit = git(repo, "rev-parse", "HEAD")
    assert (worktree / ".git").is_file()
    assert read_git_commit(worktree) == worktree_commit != main_commit
    assert read_git_commit(repo) == main_commit


def test_worktree_reads_packed_refs_from_the_common_dir(git: Git, repo: Path) -> None:
    worktree = repo.parent / "wt"
    git(repo, "worktree", "add", "--quiet", "-b", "other", str(worktree))
    worktree_commit = git.commit(worktree, "in worktree")
    git(repo, "pack-refs", "--all")
    assert not (repo / ".git" / "refs" / "heads" / "other").exists()
    assert read_git_commit(worktree) == worktree_commit


@pytest.mark.parametrize("target", ["work tree", ".git file"])
def test_git_path_may_point_at_a_worktree_or_its_git_file(
    target: str, git: Git, repo: Path
) -> None:
    worktree = repo.parent / "wt"
    git(repo, "worktree", "add", "--quiet", "-b", "other", str(worktree))
    worktree_commit = git.commit(worktree, "in worktree")
    path = worktree if target == "work tree" else worktree / ".git"
    assert from_git(path) == VersionInfo(worktree_commit[:12], "git")


def test_git_path_may_point_at_a_git_directory(git: Git, repo: Path) -> None:
    assert from_git(repo / ".git") == VersionInfo(git(repo, "rev-parse", "HEAD")[:12], "git")


def test_submodule_git_file_with_relative_gitdir_is_followed(git: Git, tmp_path: Path) -> None:
    git(tmp_path, "init", "--quiet", "library")
    library_commit = git.commit(tmp_path / "library", "library")
    git(tmp_path, "init", "--quiet", "app")
    app = tmp_path / "app"
    app_commit = git.commit(app, "app")
    git(app, "submodule", "--quiet", "add", str(tmp_path / "library"), "vendor/library")
    submodule = app / "vendor" / "library"
    assert (submodule / ".git").read_text().startswith("gitdir: ../")
    assert read_git_commit(submodule) == library_commit
    assert read_git_commit(app) == app_commit


def test_reftable_repository_gives_none(git: Git, repo: Path) -> None:
    git(repo, "config", "core.repositoryFormatVersion", "1")
    git(repo, "config", "extensions.refStorage", "reftable")
    assert read_git_commit(repo) is None


# --- falling through to the environment and to "unknown" ----------------------------------


def test_unborn_branch_falls_through_to_environment_then_unknown(git: Git, tmp_path: Path) -> None:
    git(tmp_path, "init", "--quiet", "empty")
    empty = tmp_path / "empty"
    assert read_git_commit(empty) is None
    info = detect_version(git_path=empty, environ={"CIRCLE_SHA1": SHA_A})
    assert info == VersionInfo(SHA_A[:12], "env:CIRCLE_SHA1")
    assert detect_version(git_path=empty, environ={}) == VersionInfo("unknown", "unknown")


def test_earlier_environment_variable_in_the_documented_order_wins() -> None:
    environ = {"GIT_COMMIT": "b" * 40, "GITHUB_SHA": "a" * 40}
    assert GIT_ENV_VARIABLES.index("GITHUB_SHA") < GIT_ENV_VARIABLES.index("GIT_COMMIT")
    assert detect_version(environ=environ) == VersionInfo("a" * 12, "env:GITHUB_SHA")


def test_blank_environment_variable_is_skipped() -> None:
    environ = {"SOURCE_VERSION": "  ", "GITHUB_SHA": SHA_A}
    assert detect_version(environ=environ) == VersionInfo(SHA_A[:12], "env:GITHUB_SHA")


def test_long_hex_environment_value_is_shortened_to_12_lower_case_characters() -> None:
    info = detect_version(environ={"CI_COMMIT_SHA": " " + SHA_A.upper() + "\n"})
    assert info == VersionInfo(SHA_A[:12], "env:CI_COMMIT_SHA")


def test_non_hex_environment_value_is_kept_stripped_and_truncated() -> None:
    info = detect_version(environ={"K_REVISION": " hello-00042-xyz "})
    assert info == VersionInfo("hello-00042-xyz", "env:K_REVISION")
    long_value = "release-" + "x" * 200
    info = detect_version(environ={"GAE_VERSION": long_value})
    assert info == VersionInfo(long_value[:100], "env:GAE_VERSION")


def test_short_hex_environment_value_is_not_treated_as_a_commit() -> None:
    assert detect_version(environ={"GIT_COMMIT": "ABC123"}).label == "ABC123"


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"garbage\n",
        b"ref:\n",
        b"ref: ../../../etc/passwd\n",
        b"ref: refs/heads/nope\n",
        b"\xff\xfe not text",
        b"0123456789abcdef\n",
    ],
)
def test_malformed_head_falls_through_without_exception(head: bytes, repo: Path) -> None:
    (repo / ".git" / "HEAD").write_bytes(head)
    assert read_git_commit(repo) is None
    info = detect_version(root_path=repo, environ={"GITHUB_SHA": SHA_A})
    assert info == VersionInfo(SHA_A[:12], "env:GITHUB_SHA")


def test_head_that_is_a_directory_falls_through_without_exception(repo: Path) -> None:
    (repo / ".git" / "HEAD").unlink()
    (repo / ".git" / "HEAD").mkdir()
    assert read_git_commit(repo) is None
    assert detect_version(root_path=repo, environ={}) == VersionInfo("unknown", "unknown")


def test_malformed_git_file_falls_through_without_exception(tmp_path: Path) -> None:
    (tmp_path / ".git").write_text("not a gitdir line\n")
    assert read_git_commit(tmp_path) is None
    (tmp_path / ".git").write_text("gitdir: does/not/exist\n")
    assert read_git_commit(tmp_path) is None


def test_unreadable_repository_is_logged_once_at_debug(
    repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (repo / ".git" / "HEAD").write_text("garbage\n")
    with caplog.at_level(logging.DEBUG, logger="flamewatch"):
        detect_version(root_path=repo, environ={})
    records = [record for record in caplog.records if record.name == "flamewatch"]
    assert [record.levelno for record in records] == [logging.DEBUG]


def test_directory_without_repository_gives_unknown(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    assert read_git_commit(tmp_path / "plain") is None
    assert detect_version(root_path=tmp_path / "plain", environ={}).source == "unknown"
    assert detect_version(git_path=tmp_path / "plain", environ={}).source == "unknown"


def test_nonexistent_path_gives_unknown(tmp_path: Path) -> None:
    missing = tmp_path / "does" / "not" / "exist"
    assert detect_version(git_path=missing, environ={}) == VersionInfo("unknown", "unknown")
    assert detect_version(root_path=missing, environ={}) == VersionInfo("unknown", "unknown")


def test_no_paths_skips_git() -> None:
    assert detect_version(environ={}) == VersionInfo("unknown", "unknown")
