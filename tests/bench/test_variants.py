"""``bench/ab.py REV+VARIANT`` patches an exported copy of ``src/``; each variant must still apply
to today's code (a refactor that moves what a variant edits fails here, not in someone's bench run)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

from harness import variants  # noqa: E402


@pytest.mark.parametrize("name", sorted(variants.VARIANTS))
def test_each_variant_applies_to_the_current_source_and_compiles(name: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(REPO / "src", src, ignore=shutil.ignore_patterns("__pycache__"))
    variants.apply(src, name)
    for relative, definition, statement in variants.VARIANTS[name][1]:
        text = (src / "isthmus" / relative).read_text()
        compile(text, relative, "exec")
        assert f"{definition}\n        {statement}\n" in text


def test_a_variant_whose_code_has_moved_refuses_to_run(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(REPO / "src", src, ignore=shutil.ignore_patterns("__pycache__"))
    relative, definition, _ = variants.VARIANTS["no-writer"][1][0]
    path = src / "isthmus" / relative
    path.write_text(path.read_text().replace(definition, definition.replace("submit", "hand_over")))
    with pytest.raises(SystemExit, match="no longer has"):
        variants.apply(src, "no-writer")
