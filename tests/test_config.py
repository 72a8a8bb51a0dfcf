"""Settings: defaults, precedence, and clear errors at init_app."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from helpers import flush, stored

from flamewatch.flask_plugin import OPTIONS, ConfigError, Flamewatch
from flamewatch.flask_plugin.config import load_settings
from flamewatch.flask_plugin.config_docs import DOCS_PATH, REGENERATE, render_configuration
from flamewatch.flask_plugin.config_docs import main as config_docs_main
from flamewatch.flask_plugin.setting_kinds import Integer, Number, Option
from flamewatch.sampler import detect_version

ROOT = Path(__file__).parent.parent


def _app(tmp_path: Path, **config: Any) -> Flask:
    app = Flask("cfgapp", instance_path=str(tmp_path / "instance"))
    app.config.update(TESTING=True)
    app.config.update(config)

    @app.get("/")
    def index() -> str:
        return "hi"

    return app


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("FLAMEWATCH_OUTLIER_K", "abc", "FLAMEWATCH_OUTLIER_K must be a number >= 0; got 'abc'"),
        ("FLAMEWATCH_OUTLIER_FACTOR", 0.5, "FLAMEWATCH_OUTLIER_FACTOR must be a number >= 1"),
        ("FLAMEWATCH_OUTLIER_WARMUP", 100, "must be an integer from 2 to 30; got 100"),
        ("FLAMEWATCH_OUTLIER_WINDOW", 10, "FLAMEWATCH_OUTLIER_WINDOW must be an integer >="),
        ("FLAMEWATCH_QUEUE_SIZE", True, "FLAMEWATCH_QUEUE_SIZE must be an integer"),
        ("FLAMEWATCH_FLUSH_INTERVAL", 0, "FLAMEWATCH_FLUSH_INTERVAL must be a number of seconds"),
        ("FLAMEWATCH_ENABLED", "maybe", "FLAMEWATCH_ENABLED must be a boolean"),
        ("FLAMEWATCH_DATABASE", "postgresql://db/fw?bogus=1", "not a valid PostgreSQL URL"),
        ("FLAMEWATCH_RETENTION_DAYS", 0, "FLAMEWATCH_RETENTION_DAYS must be a number of days"),
        (
            "FLAMEWATCH_HISTOGRAM_RETENTION_DAYS",
            "forever",
            "FLAMEWATCH_HISTOGRAM_RETENTION_DAYS must be a number of days from 0.01 to 36,500,"
            " or None",
        ),
        ("FLAMEWATCH_HISTOGRAM_GROUPS", -1, "FLAMEWATCH_HISTOGRAM_GROUPS must be an integer from"),
        ("FLAMEWATCH_DATABASE", ":memory:", "an in-memory database cannot be shared"),
        ("FLAMEWATCH_DATABASE", "mysql://db/fw", "the scheme 'mysql' is not supported"),
        ("FLAMEWATCH_DATABASE", "sqlite://relative", "not a SQLite URL of the form sqlite:///"),
        ("FLAMEWATCH_DATABASE", 42, "FLAMEWATCH_DATABASE must be a file path, a sqlite:///"),
        ("FLAMEWATCH_VERSION", "   ", "FLAMEWATCH_VERSION must be a non-empty string"),
        ("FLAMEWATCH_GIT", "/no/such/dir", "'/no/such/dir' does not exist"),
        ("FLAMEWATCH_GROUP_BY", "no_such_module:f", "cannot import it"),
        ("FLAMEWATCH_GROUP_BY", 42, "FLAMEWATCH_GROUP_BY must be a callable request -> str"),
        ("FLAMEWATCH_REDACT", ["pin", "-"], "FLAMEWATCH_REDACT must be a list of key fragments"),
        ("FLAMEWATCH_SAMPLE_INTERVAL_MS", 0.5, "must be a number of milliseconds from 1 to 1000"),
        ("FLAMEWATCH_PROFILES_PER_HOUR", -1, "FLAMEWATCH_PROFILES_PER_HOUR must be an integer"),
        ("FLAMEWATCH_CAPTURE_HEADERS", {"a": 1}, "FLAMEWATCH_CAPTURE_HEADERS must be a list"),
        ("FLAMEWATCH_EXCLUDE", 5, "FLAMEWATCH_EXCLUDE must be a list of endpoint names"),
        (
            "FLAMEWATCH_DATABSE",
            "x.db",
            "unknown setting FLAMEWATCH_DATABSE; did you mean FLAMEWATCH_DATABASE?",
        ),
    ],
    ids=lambda v: str(v)[:30],
)
def test_bad_setting_raises_at_init_app_naming_key_and_accepted_values(
    tmp_path: Path, key: str, value: Any, message: str
) -> None:
    app = _app(tmp_path, **{key: value})
    with pytest.raises(ConfigError, match=re.escape(message)):
        Flamewatch(app)
    assert "flamewatch" not in app.extensions
    assert not [t for t in threading.enumerate() if t.name.startswith("flamewatch-")]


def test_bad_keyword_argument_names_the_argument(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"outlier_k \(keyword argument\) must be a number"):
        Flamewatch(_app(tmp_path), outlier_k=-2)


def test_unknown_keyword_argument_is_a_type_error_with_a_suggestion() -> None:
    with pytest.raises(TypeError, match="unknown option 'groupby'; did you mean group_by"):
        Flamewatch(groupby=lambda r: None)


def test_keyword_arguments_win_over_app_config(tmp_path: Path) -> None:
    app = _app(tmp_path, FLAMEWATCH_VERSION="from-config", FLAMEWATCH_OUTLIER_K="2.5")
    Flamewatch(app, version="from-kwargs")
    agent = app.extensions["flamewatch"]
    assert agent.version.label == "from-kwargs"
    assert agent.settings.outlier.k == 2.5  # strings from env-style config are parsed
    agent.close()


def test_default_store_is_created_in_the_instance_folder(tmp_path: Path) -> None:
    app = _app(tmp_path, FLAMEWATCH_VERSION="1")
    fw = Flamewatch(app)
    assert not (tmp_path / "instance").exists()  # nothing happens before the first request
    app.test_client().get("/")
    assert fw.flush(timeout=30)
    store = tmp_path / "instance" / "flamewatch.sqlite3"
    assert [r["endpoint"] for r in stored(store)] == ["index"]
    fw.close()


@pytest.mark.parametrize(
    "setting",
    ["data/fw.sqlite3", "sqlite:///data/fw.sqlite3"],
    ids=["relative-path", "relative-sqlite-url"],
)
def test_relative_store_paths_are_in_the_instance_folder(tmp_path: Path, setting: str) -> None:
    app = _app(tmp_path, FLAMEWATCH_DATABASE=setting)
    Flamewatch(app)
    app.test_client().get("/")
    flush(app)
    assert len(stored(tmp_path / "instance" / "data" / "fw.sqlite3")) == 1
    app.extensions["flamewatch"].close()


def test_absolute_sqlite_url(tmp_path: Path) -> None:
    target = tmp_path / "abs.sqlite3"
    app = _app(tmp_path, FLAMEWATCH_DATABASE=f"sqlite:///{target}")
    Flamewatch(app)
    assert app.extensions["flamewatch"].database == f"sqlite:///{target}"
    app.extensions["flamewatch"].close()


def test_disabled_installs_nothing(tmp_path: Path) -> None:
    app = _app(tmp_path, FLAMEWATCH_ENABLED="false")
    wsgi_app = app.wsgi_app
    Flamewatch(app)
    assert app.wsgi_app == wsgi_app
    assert app.test_client().get("/").text == "hi"
    assert not (tmp_path / "instance").exists()


def test_init_app_twice_is_refused(tmp_path: Path) -> None:
    app = _app(tmp_path)
    fw = Flamewatch(app)
    with pytest.raises(RuntimeError, match="already initialised"):
        fw.init_app(app)
    fw.close()


def test_app_factory_and_bind_alias(tmp_path: Path) -> None:
    fw = Flamewatch(version="factory")
    apps = []
    for name in ("one", "two"):
        app = _app(tmp_path / name, FLAMEWATCH_DATABASE=str(tmp_path / f"{name}.sqlite3"))
        fw.bind(app)
        app.test_client().get("/")
        apps.append(app)
    assert fw.flush(timeout=30)
    for name in ("one", "two"):
        assert [r["version"] for r in stored(tmp_path / f"{name}.sqlite3")] == ["factory"]
    assert fw.close()
    assert not hasattr(fw, "app")


def test_configuration_docs_are_written_from_the_declarations() -> None:
    page = (ROOT / DOCS_PATH).read_text(encoding="utf-8")
    assert page == render_configuration(), f"{DOCS_PATH} is stale: run {REGENERATE}"
    for option in OPTIONS:
        assert f"| `{option.key}` / `{option.name}` |" in page


def test_docs_check_says_how_to_regenerate_a_stale_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = tmp_path / "configuration.md"
    stale.write_text("# Configuration\n", encoding="utf-8")
    assert config_docs_main([str(stale), "--check"]) == 1
    assert f"is stale: run {REGENERATE}" in capsys.readouterr().err
    assert config_docs_main([str(stale)]) == 0
    assert config_docs_main([str(stale), "--check"]) == 0
    assert stale.read_text(encoding="utf-8") == render_configuration()


def test_the_readme_names_only_declared_settings_and_links_the_full_list() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(docs/configuration.md)" in readme
    declared = {option.key for option in OPTIONS}
    named = set(re.findall(r"FLAMEWATCH_[A-Z_]+[A-Z]", readme))
    assert named, "the README names the main settings"
    assert named <= declared, named - declared


_BOUNDED = [o for o in OPTIONS if isinstance(o.declared.kind, (Number, Integer))]


@pytest.mark.parametrize("option", _BOUNDED, ids=lambda o: o.name)
def test_the_bounds_the_docs_state_are_the_bounds_checked(tmp_path: Path, option: Option) -> None:
    kind = option.declared.kind
    assert isinstance(kind, (Number, Integer))
    low = 2 if kind.low == "outlier_warmup" else kind.low  # the least warm-up allowed
    assert isinstance(low, (int, float))
    step = 1 if isinstance(kind, Integer) else low / 2 or 0.5
    edges = [low] if kind.high is None else [low, kind.high]
    config = {"FLAMEWATCH_OUTLIER_WARMUP": 2}
    for edge in edges:
        settings = load_settings({**config, option.key: edge}, {}, str(tmp_path))
        assert getattr(settings, option.name) == edge
    outside = [low - step] if kind.high is None else [low - step, kind.high + step]
    for value in outside:
        with pytest.raises(ConfigError, match=re.escape(f"must be {option.accepts}; got")):
            load_settings({**config, option.key: value}, {}, str(tmp_path))


@pytest.mark.parametrize("blank", ["", "   "])
def test_an_empty_git_setting_says_what_to_set_instead(tmp_path: Path, blank: str) -> None:
    app = _app(tmp_path, FLAMEWATCH_GIT=blank)
    with pytest.raises(ConfigError) as raised:
        Flamewatch(app)
    message = str(raised.value)
    assert message.startswith("FLAMEWATCH_GIT must be an existing directory")
    assert "leave FLAMEWATCH_GIT unset to search upward from the app's root path" in message
    with pytest.raises(ValueError, match="git_path is empty"):
        detect_version(git_path=blank, environ={})


@pytest.mark.parametrize(
    ("database", "message"),
    [
        ("{tmp}", "it is a directory; name a file in it, e.g. {tmp}/flamewatch.sqlite3"),
        ("sqlite:///{tmp}", "it is a directory"),
        ("/dev/null", "it is not a regular file (a device, pipe or socket?)"),
        ("{tmp}/store\x00.sqlite3", "it contains a NUL character"),
        ("{tmp}/no/such/folder/store.sqlite3", "its folder '{tmp}/no/such/folder' does not exist"),
        ("{tmp}/a-file/store.sqlite3", "'{tmp}/a-file' is not a folder this process may create"),
        ("{tmp}/instance/x/a-file/s.sqlite3", "'{tmp}/instance/x/a-file' is not a folder"),
    ],
    ids=[
        "directory",
        "directory-url",
        "device",
        "nul",
        "no-folder",
        "file-as-folder",
        "in-instance",
    ],
)
def test_an_unusable_sqlite_path_is_refused_at_init_app(
    tmp_path: Path, database: str, message: str
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "instance" / "x").mkdir(parents=True)
    (tmp_path / "instance" / "x" / "a-file").write_text("not a folder")
    app = _app(tmp_path, FLAMEWATCH_DATABASE=database.format(tmp=tmp_path))
    with pytest.raises(ConfigError, match=re.escape(message.format(tmp=tmp_path))):
        Flamewatch(app)
    assert "flamewatch" not in app.extensions


def test_folders_under_the_instance_folder_are_created_others_must_exist(tmp_path: Path) -> None:
    app = _app(tmp_path, FLAMEWATCH_DATABASE="data/store.sqlite3")  # instance/data/…
    fw = Flamewatch(app)
    app.test_client().get("/")
    assert fw.flush(timeout=10)
    fw.close()
    assert (tmp_path / "instance" / "data" / "store.sqlite3").is_file()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write any folder")
def test_a_folder_this_process_may_not_write_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    app = _app(tmp_path, FLAMEWATCH_DATABASE=str(locked / "store.sqlite3"))
    with pytest.raises(ConfigError, match="is not a folder this process may create files in"):
        Flamewatch(app)
