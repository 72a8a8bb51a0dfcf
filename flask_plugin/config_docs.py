"""docs/configuration.md, written from the settings' declarations (:mod:`.config`).

Run ``python -m flamewatch.flask_plugin.config_docs`` at the repository's root after changing
a setting; ``--check`` only says whether the file is current (the test suite does the same).
The page is never edited by hand, so what it says is what ``init_app`` checks.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import OPTIONS, Option

__all__ = ["DOCS_PATH", "REGENERATE", "main", "render_configuration"]

#: where the page lives, from the repository's root
DOCS_PATH = Path("docs") / "configuration.md"
#: the command that rewrites it
REGENERATE = "python -m flamewatch.flask_plugin.config_docs"

_INTRO = f"""\
# Configuration

<!-- Written by `{REGENERATE}` from flask_plugin/config.py: edit the declarations there. -->

Each setting is read from the keyword argument of `Flamewatch(...)` (which wins), then from
`app.config["FLAMEWATCH_…"]`, then its default. A bad value raises `ConfigError` at `init_app`,
naming the key and what it accepts; an unknown `FLAMEWATCH_*` key is refused with a suggestion,
and an unknown keyword argument is a `TypeError`. Strings (as from
`app.config.from_prefixed_env()`) are parsed for numbers and booleans, and a comma-separated
string is a list.

```python
app.config["FLAMEWATCH_DATABASE"] = "postgresql://user:password@host:5432/dbname"
Flamewatch(app, outlier_k=4, exclude=["health", "admin.*"])
```

| key / keyword | default | accepts | meaning |
| --- | --- | --- | --- |
"""


def render_configuration() -> str:
    """The whole page: the introduction, then one table row per setting, in declared order."""
    return _INTRO + "".join(_row(option) for option in OPTIONS)


def _row(option: Option) -> str:
    cells = (
        f"`{option.key}` / `{option.name}`",
        _default(option),
        option.accepts,
        option.help,
    )
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |\n"


def _default(option: Option) -> str:
    """The default in words when the declaration gives them, else its value as code."""
    if option.declared.default_help is not None:
        return option.declared.default_help
    value: Any = option.default
    if value is None or value == ():
        return "none"
    if isinstance(value, tuple):
        return ", ".join(f"`{item}`" for item in value)
    return f"`{value}`"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=REGENERATE, description="Write docs/configuration.md from the settings' declarations."
    )
    parser.add_argument("path", nargs="?", type=Path, default=DOCS_PATH)
    parser.add_argument("--check", action="store_true", help="only say whether it is current")
    args = parser.parse_args(argv)
    page = render_configuration()
    path: Path = args.path
    if args.check:
        current = path.is_file() and path.read_text(encoding="utf-8") == page
        if not current:
            sys.stderr.write(f"{path} is stale: run {REGENERATE}\n")
        return 0 if current else 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
