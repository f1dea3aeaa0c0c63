"""The docs stand on their own: every relative link resolves inside the repository, the contract is
docs/CONTRACT.md (no reference to a SPEC a user does not have), and ``../shared`` appears only where
the docs say what the test suite reads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", ROOT / "data" / "sample" / "README.md", *(ROOT / "docs").rglob("*.md")])
# What else a user reads: docstrings, API descriptions, dashboard panel descriptions.
PYTHON = [p for top in ("shared", "services", "bench", "tests") for p in (ROOT / top).rglob("*.py")]
CODE = sorted([*PYTHON, *(ROOT / "deploy").rglob("*.json")])

# Inline links and images: [text](target) or ![alt](target), an optional "title" after the target.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
DOCS_PATH = re.compile(r"(?<![\w./-])docs/[\w./-]*?\.md\b")  # a docs page named in prose: docs/X.md
SPEC = re.compile(r"\bSPEC\b")
SHARED = "../shared"


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def prose(text: str) -> str:
    """The text outside fenced code blocks (a link there is code, not a link)."""
    return FENCE.sub("", text)


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {anchor(h) for h in HEADING.findall(prose(page.read_text()))}


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    problems = []
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path_part, _, fragment = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.is_relative_to(root):
            problems.append(f"{target}: outside the repository")
        elif not resolved.exists():
            problems.append(f"{target}: no such file")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            problems.append(f"{target}: no heading #{fragment} in {resolved.relative_to(root)}")
    return problems


def test_the_docs_are_found() -> None:
    names = {relative(p) for p in DOCS}
    assert {"README.md", "docs/CONTRACT.md", "docs/DATA.md", "docs/results/README.md"} <= names


@pytest.mark.parametrize("page", DOCS, ids=relative)
def test_every_relative_link_resolves(page: Path) -> None:
    assert broken_links(page) == []


@pytest.mark.parametrize("page", DOCS, ids=relative)
def test_every_docs_page_named_in_prose_exists(page: Path) -> None:
    missing = [name for name in DOCS_PATH.findall(page.read_text()) if not (ROOT / name).is_file()]
    assert missing == []


@pytest.mark.parametrize("page", DOCS, ids=relative)
def test_no_spec_reference(page: Path) -> None:
    """The contract is docs/CONTRACT.md: "SPEC section 5" points a user at a file they do not have."""
    lines = [f"{n}: {line}" for n, line in enumerate(page.read_text().splitlines(), 1) if SPEC.search(line)]
    assert lines == []


def test_no_spec_reference_in_the_code_or_dashboards() -> None:
    hits = [
        f"{relative(path)}:{n}"
        for path in CODE
        if path != Path(__file__).resolve()
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if SPEC.search(line)
    ]
    assert hits == []


def test_shared_appears_only_where_the_docs_say_what_the_tests_read() -> None:
    """A cloning user has no ``../shared``: a doc may name it only in the sentence saying that the test
    suite reads the real data from it when it is there, once per page."""
    mentions: dict[str, list[str]] = {}
    for page in DOCS:
        text = " ".join(page.read_text().split())
        for at in [m.start() for m in re.finditer(re.escape(SHARED), text)]:
            start = text.rfind(". ", 0, at) + 2
            end = text.find(". ", at)
            mentions.setdefault(relative(page), []).append(text[start : end if end >= 0 else len(text)])
    assert set(mentions) <= {"README.md", "docs/DATA.md"}, mentions
    for page, sentences in mentions.items():
        assert len(sentences) == 1, (page, sentences)
        assert "test suite reads" in sentences[0], (page, sentences[0])


def test_the_checker_finds_what_it_should(tmp_path: Path) -> None:
    """The checker is not vacuous: a missing file, a missing heading and a path out of the repository
    are each reported; a good link, a good heading and a link inside a code fence are not."""
    assert (
        anchor("2. Features and the window (`shared/schema.py`)")
        == "2-features-and-the-window-sharedschemapy"
    )
    assert "the-summary-table-and-the-html-report" in anchors(ROOT / "docs" / "METRICS.md")
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "A.md").write_text("# A\n\n## Some heading, here\n")
    page = root / "docs" / "B.md"
    page.write_text(
        "[a](A.md) [b](A.md#some-heading-here) [c](NOPE.md) [d](A.md#nothing) [e](../../out.md)\n"
        "[f](https://example.com/x.md)\n```\n[g](IN_A_FENCE.md)\n```\n"
    )
    assert broken_links(page, root) == [
        "NOPE.md: no such file",
        "A.md#nothing: no heading #nothing in docs/A.md",
        "../../out.md: outside the repository",
    ]
