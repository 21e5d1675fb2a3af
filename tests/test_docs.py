"""The documentation: every relative link in README.md and docs/ resolves, the README fits a screen,
and the pages point at nothing outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
README_MAX_LINES = 150
# Markdown links and images: [text](target) / ![alt](target); the target may carry a "title".
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`[^`]*`")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto: ...


def doc_files() -> list[Path]:
    """Every page whose links are checked: README, docs/ (with the demo reports kept there), the model cards."""
    return [README, *sorted((ROOT / "docs").rglob("*.md")), ROOT / "weights" / "README.md"]


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, with inline code removed: links in code are not links."""
    out, in_fence = [], False
    for n, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            out.append((n, INLINE_CODE.sub("", line)))
    return out


def links(path: Path) -> list[tuple[int, str]]:
    return [(n, m.group(1)) for n, line in prose_lines(path.read_text(encoding="utf-8")) for m in LINK.finditer(line)]


def heading_slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (letters of any script, digits,
    '_' and '-' kept), each space a hyphen."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Anchors of a markdown file's headings; repeated headings get -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = heading_slug(m.group(1))
        out.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return out


def broken_links(path: Path, root: Path = ROOT) -> list[tuple[int, str, str]]:
    """(line, target, what is wrong) for each relative link of ``path`` that does not resolve inside ``root``."""
    problems = []
    for n, target in links(path):
        if EXTERNAL.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.is_relative_to(root):
            problems.append((n, target, "points outside the repository"))
        elif not dest.exists():
            problems.append((n, target, "does not exist"))
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append((n, target, f"no heading with anchor #{anchor} in {dest.relative_to(root)}"))
    return problems


# --- the checker itself, on small pages written here -------------------------------------------


def test_heading_slug_matches_github():
    assert heading_slug("The HEAR tools") == "the-hear-tools"
    assert heading_slug("Generator (`apwd build`)") == "generator-apwd-build"
    assert heading_slug("λ and the loss scale") == "λ-and-the-loss-scale"
    assert heading_slug("Equations → code") == "equations--code"


def test_checker_finds_broken_links_and_ignores_code(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Title\n\n## Two words\n\n## Two words\n")
    page = tmp_path / "README.md"
    page.write_text(
        "[ok](docs/a.md) [ok anchor](docs/a.md#two-words) [repeat](docs/a.md#two-words-1) [web](https://x.org/y)\n"
        "![missing image](docs/img.png) [bad anchor](docs/a.md#three) [self](#nowhere)\n"
        "[outside](../elsewhere/file.md) `[in code](nope.md)`\n"
        "```\n[in a fence](nope.md)\n```\n"
    )
    problems = broken_links(page, root=tmp_path)
    assert [(n, target) for n, target, _ in problems] == [
        (2, "docs/img.png"),
        (2, "docs/a.md#three"),
        (2, "#nowhere"),
        (3, "../elsewhere/file.md"),
    ]
    assert [why.split()[0] for *_, why in problems] == ["does", "no", "no", "points"]


# --- the real pages -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    problems = [f"{path.relative_to(ROOT)}:{n}: {target} {why}" for n, target, why in broken_links(path)]
    assert problems == []


def test_readme_fits_a_screen():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines; move detail into docs/ (limit {README_MAX_LINES})"


def test_readme_links_every_docs_page():
    linked = {(README.parent / t.partition("#")[0]).resolve() for _, t in links(README) if not EXTERNAL.match(t)}
    pages = set((ROOT / "docs").glob("*.md"))
    assert pages - linked == set(), "README.md should link every page in docs/"


@pytest.mark.parametrize("path", [README, *sorted((ROOT / "docs").glob("*.md"))], ids=lambda p: p.name)
def test_pages_point_at_nothing_outside_the_repository(path):
    text = path.read_text(encoding="utf-8")
    for marker in ("../shared", "/work/", "+dirty"):
        assert marker not in text, f"{path.relative_to(ROOT)} mentions {marker!r}"


TEST_COMMAND = 'pip install "torch==2.13.0" -e ".[test]" && hear-diffbyola install-eval-tools && python -m pytest'


def ci_commands(script: str) -> list[str]:
    """The commands a shell script runs, in order: its lines split at '&&', comment lines and blanks dropped."""
    lines = [line.strip() for line in script.splitlines() if not line.lstrip().startswith("#")]
    return [part.strip() for line in lines if line for part in line.split("&&")]


def test_ci_commands_reads_a_script():
    script = "#!/usr/bin/env bash\n# a comment\nset -e\na --x && b\n\nc 'd' && e\n"
    assert ci_commands(script) == ["set -e", "a --x", "b", "c 'd'", "e"]


def test_readme_test_command_is_what_ci_runs():
    # README and docs/development.md give the one-line form; .ci/run runs the same steps in the same order
    # (with the ruff checks it adds between the install and the tests).
    assert TEST_COMMAND in README.read_text(encoding="utf-8")
    assert TEST_COMMAND in (ROOT / "docs" / "development.md").read_text(encoding="utf-8")
    steps = [part.strip() for part in TEST_COMMAND.split("&&")]
    ci = ci_commands((ROOT / ".ci" / "run").read_text(encoding="utf-8"))
    assert all(step in ci for step in steps), f".ci/run lacks a step of the README's test command: {steps}"
    assert [ci.index(step) for step in steps] == sorted(ci.index(step) for step in steps)


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_pages_render(path):
    # A markdown renderer (markdown-it-py, CommonMark + tables) sees one title and every table as a table:
    # a table row left inside a paragraph means a broken table (a missing rule line or a stray pipe).
    markdown_it = pytest.importorskip("markdown_it")
    tokens = markdown_it.MarkdownIt("commonmark").enable("table").parse(path.read_text(encoding="utf-8"))
    titles = [t for t in tokens if t.type == "heading_open" and t.tag == "h1"]
    assert len(titles) == 1, f"{path.relative_to(ROOT)} should have exactly one '# title'"
    stray = [
        tokens[i + 1].content.splitlines()[0]
        for i, t in enumerate(tokens)
        if t.type == "paragraph_open"
        and any(line.lstrip().startswith("|") for line in tokens[i + 1].content.splitlines())
    ]
    assert stray == [], f"{path.relative_to(ROOT)}: table rows that do not render as a table: {stray}"


def test_render_check_sees_a_broken_table():
    markdown_it = pytest.importorskip("markdown_it")
    md = markdown_it.MarkdownIt("commonmark").enable("table")
    ok, broken = "| a | b |\n|---|---|\n| 1 | 2 |\n", "| a | b |\n| 1 | 2 |\n"
    assert md.parse(ok)[0].type == "table_open"
    assert md.parse(broken)[0].type == "paragraph_open"
