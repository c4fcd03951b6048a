"""The README stays short and points to every page under docs/; the links between pages resolve."""

import re

from helpers import REPO

README = REPO / "README.md"
DOCS = REPO / "docs"
MAX_README_LINES = 350

# a markdown link [text](target), the target without spaces
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _links(path):
    return LINK.findall(path.read_text())


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # no headings in code blocks
    return {_slug(line.lstrip("#")) for line in text.splitlines() if re.match(r"#{1,6} ", line)}


def _local_targets(path):
    """(file, anchor) of every link from `path` to a file of the repository."""
    for target in _links(path):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        name, _, anchor = target.partition("#")
        yield (path.parent / name if name else path).resolve(), anchor


def test_readme_is_at_most_350_lines():
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; move text to docs/"


def test_every_docs_page_is_linked_from_the_readme_and_every_link_exists():
    pages = {p.resolve() for p in DOCS.glob("*.md")}
    linked = {target for target, _ in _local_targets(README) if target.parent == DOCS.resolve()}
    assert pages, "docs/ has no pages"
    absent = sorted(p.name for p in linked - pages)
    unlinked = sorted(p.name for p in pages - linked)
    assert not absent, f"README links pages that do not exist: {absent}"
    assert not unlinked, f"pages not linked from README: {unlinked}"


def test_links_of_the_readme_and_the_docs_resolve():
    broken = []
    for page in [README, *sorted(DOCS.glob("*.md"))]:
        for target, anchor in _local_targets(page):
            if not target.exists():
                broken.append(f"{page.name}: {target.name} does not exist")
            elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
                broken.append(f"{page.name}: no heading #{anchor} in {target.name}")
    assert not broken, "\n".join(broken)


def test_the_phase_list_names_every_phase_of_the_registry():
    from scalinglab.phases import PHASES

    page = (DOCS / "phases.md").read_text()
    missing = [phase.name for phase in PHASES if f"| `{phase.name}`" not in page]
    assert not missing, f"docs/phases.md does not list: {missing}"
