"""The README gets a newcomer to the demo on its first screen, and every link in the docs leads somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.integration.test_escalation import DEAD_LETTERS

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "patches" / "README.md"]
SCREEN = 40  # lines of a terminal, or of a browser window, give or take


def code_blocks(text: str) -> list[tuple[int, int, str]]:
    """(first line, last line, body) of each fenced block, lines numbered from 1."""
    blocks, lines, start = [], text.splitlines(), None
    for number, line in enumerate(lines, 1):
        if line.startswith("```"):
            if start is None:
                start = number
            else:
                blocks.append((start, number, "\n".join(lines[start:number - 1])))
                start = None
    return blocks


def headings(text: str) -> list[str]:
    """Markdown headings, not the comments of code blocks."""
    found, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif line.startswith("#") and not fenced:
            found.append(line)
    return found


def test_the_first_screen_goes_from_nothing_to_the_demo_in_a_virtual_environment():
    text = README.read_text()
    start, end, body = code_blocks(text)[0]
    assert end <= SCREEN
    commands = [line.split("#")[0].strip() for line in body.splitlines()]
    venv = next(i for i, c in enumerate(commands) if c.startswith("python3 -m venv .venv"))
    install = next(i for i, c in enumerate(commands) if c.startswith("pip install"))
    demo = commands.index("jr-checkpoint demo")
    assert ". .venv/bin/activate" in commands[venv]
    assert venv < install < demo
    assert "python3-venv" in "\n".join(text.splitlines()[:start])  # what Debian lacks for venv


def test_the_readme_reads_in_a_few_minutes_and_uses_no_word_it_has_not_explained():
    text = README.read_text()
    assert len(text.splitlines()) <= 120
    assert len(text.split()) <= 1000
    for word in ("seed", "Kanban", "#1751"):
        assert word not in text
    sections = [line for line in headings(text) if line.startswith("## ")]
    assert sections == ["## Try it", "## Use it in the host", "## Look at it: the dashboard",
                        "## Run the tests", "## More"]


@pytest.mark.parametrize("document", DOCS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file_and_a_heading(document):
    for target in re.findall(r"\]\(([^)\s]+)\)", document.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (document.parent / path).resolve() if path else document
        assert linked.exists(), f"{document.name}: {target}"
        if anchor and linked.suffix == ".md":
            slugs = {re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
                     for line in headings(linked.read_text())}
            assert anchor in slugs, f"{document.name}: {target}"


def test_the_dead_letter_example_is_the_one_the_escalation_test_runs():
    design = (ROOT / "docs" / "design.md").read_text()
    assert DEAD_LETTERS.strip() + ";" in design
    statement = " ".join(design.split())  # the test's copy is laid out differently
    assert ('"INSERT INTO jr_dead_letters (task_id, checkpoint) VALUES (%s, %s) " "ON CONFLICT (task_id) '
            'DO UPDATE SET checkpoint = EXCLUDED.checkpoint, at = NOW()"') in statement


def test_design_notes_explain_their_words_before_using_them():
    design = (ROOT / "docs" / "design.md").read_text()
    words = design.index("Words used below")
    for word in ("the seed", "the instruction", "the host", "the ledger"):
        assert design.index(word) > words, word
