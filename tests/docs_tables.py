"""Generated tables in docs/reliability.md: each lives between ``<!-- begin NAME -->`` and ``<!-- end NAME -->``.

The tests that own a table regenerate it from the same case lists they run and compare it with the file, so the
document cannot drift from the tests. ``python tests/test_reliability.py`` (or ``test_sklearn_checks.py``)
rewrites the blocks after a deliberate change.
"""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"


def _pattern(name):
    return re.compile(rf"(<!-- begin {re.escape(name)} -->\n)(.*?)(<!-- end {re.escape(name)} -->)", re.S)


def read_block(name):
    """The text of block ``name`` (without the markers); None when the block is missing."""
    m = _pattern(name).search(DOC.read_text("utf-8"))
    return None if m is None else m.group(2)


def write_block(name, text):
    """Replace block ``name`` in the document with ``text``."""
    doc = DOC.read_text("utf-8")
    new, n = _pattern(name).subn(lambda m: m.group(1) + text + m.group(3), doc)
    if n != 1:
        raise ValueError(f"{DOC} has no block {name!r}")
    DOC.write_text(new, "utf-8")


def cell(text):
    """Escape text for a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")
