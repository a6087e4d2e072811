"""MkDocs hooks: pages made from the sources they document, so that nothing is copied by hand.

- benchmarks.md is BENCHMARKS.md at the repository's root (where benchmark scripts record
  their results).
- css/pygments.css is the colours of the code blocks, which Pygments marks up when the site
  is built (nothing is fetched when a page is read).
- A line `<!-- settings: train -->` or `<!-- settings: features -->` in a page becomes the
  table of every key of that config, read from the config classes' own field metadata
  (blendsync.shared.settings): key, default, what a value must be, and what it does.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^<!-- settings: (train|features) -->$", re.M)


def on_files(files, config):
    from pygments.formatters import HtmlFormatter

    files.append(File.generated(config, "benchmarks.md", content=(ROOT / "BENCHMARKS.md").read_text()))
    files.append(File.generated(config, "css/pygments.css", content=HtmlFormatter().get_style_defs(".codehilite")))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    return MARKER.sub(lambda m: settings_table(m.group(1)), markdown)


def settings_table(which: str) -> str:
    from blendsync.shared import settings

    if which == "train":
        from blendsync.train.core.config import TrainConfig as cls
    else:
        from blendsync.shared.config import FeatureConfig as cls
    rows = ["| key | default | value | what it does |", "|---|---|---|---|"]
    for key, field in settings.keys(cls).items():
        default = settings.default_of(field)
        if hasattr(default, "name") and hasattr(default, "channels"):  # a channel set: by its name
            default = default.name
        doc = settings.doc_text(field).replace("|", "\\|")
        rows.append(f"| `{key}` | `{_plain(default)}` | {settings.rule_text(field)} | {doc} |")
    return "\n".join(rows)


def _plain(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)
