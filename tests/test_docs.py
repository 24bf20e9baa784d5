"""Docs that are generated from code stay equal to it."""

from __future__ import annotations

from pathlib import Path

from m3fmarl.problems import switch_markdown, switch_table

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_variants_doc_holds_the_generated_switch_table() -> None:
    text = (DOCS / "variants.md").read_text()
    block = text.split("<!-- switch-table:begin -->\n", 1)[1].split("<!-- switch-table:end -->", 1)[0]
    assert block == switch_markdown(), "docs/variants.md is stale: regenerate with `m3fmarl envs --switches`"


def test_every_switch_has_a_description() -> None:
    missing = [(r["problem"], r["switch"]) for r in switch_table() if not r["doc"]]
    assert not missing
