"""Split README.md into the documentation site's pages under docs/.

README.md is cut into sections at its ``## `` and ``### `` headings. ``PAGES`` below says
which section goes to which page: a ``## `` section carries its ``### `` sections with it,
unless one of them is named by another page. Every ``## `` section must land somewhere: a
section the mapping does not know stops the script with its name (add it to ``PAGES``), so
nothing written in the README is left behind.

    python tools/split_readme.py            # write docs/*.md from README.md
    python tools/split_readme.py --check    # only say what would go where
    python tools/split_readme.py --apply    # write the pages, then README.md becomes
                                            # docs/README.landing.md (the short landing page)

Links between sections (``[text](#anchor)``) are pointed at the page the section went to;
links to files of the repository outside docs/ become plain text. The first command block
of "Quick start" must appear unchanged in the landing page, or ``--apply`` refuses.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
LANDING = DOCS / "README.landing.md"
LANDING_MARK = "<!-- landing page: the documentation is in docs/ -->"


@dataclass(frozen=True)
class Page:
    path: str  # under docs/
    title: str
    # Headings that go to this page: "## Name" or "### Name" (exact text), or
    # "## re:PATTERN" (a regular expression matched from the start of the heading).
    sections: tuple[str, ...]
    # Headings that may be missing from README.md (the page is then built from `extract`).
    optional: bool = False
    # A paragraph written under the page's title, before the sections.
    lead: str = ""
    # When none of `sections` is in README.md: the rows of the platform table and the bullets
    # of the "Platforms" section that name this word.
    extract: str = ""


PAGES: tuple[Page, ...] = (
    Page("getting-started.md", "Getting started", ("## Quick start", "## re:Exit codes")),
    Page("how-it-decides.md", "How it decides", ("## How it decides",)),
    Page("platforms/index.md", "Platforms", ("## Platforms",)),
    Page("platforms/x.md", "X", ("## X", "## re:X\\b")),
    Page(
        "platforms/facebook.md",
        "Facebook",
        ("## re:Facebook\\b(?!, LinkedIn)", "### Facebook's API"),
        lead=(
            "On Facebook your data export is the main source (see [the data exports]"
            "(exports.md)); the Graph API adds what it can."
        ),
    ),
    Page(
        "platforms/mastodon.md",
        "Mastodon",
        ("## re:Mastodon", "### re:Mastodon"),
        optional=True,
        extract="mastodon",
    ),
    Page(
        "platforms/bluesky.md",
        "Bluesky",
        ("## re:Bluesky", "### re:Bluesky"),
        optional=True,
        extract="bluesky",
    ),
    Page(
        "platforms/exports.md",
        "LinkedIn, Instagram and the data exports",
        ("## re:Facebook, LinkedIn and Instagram", "## re:(LinkedIn|Instagram|Data export)"),
    ),
    Page(
        "digest.md",
        "The digest and the review page",
        ("## The digest and the review page",),
        # Taken from the real pages by tools/capture_pages.py.
        lead=(
            '![The digest on a phone](images/digest-phone.jpg){ width="260" } '
            '![The review page on a phone](images/review-phone.jpg){ width="260" }\n\n'
            "![The review page on a desktop](images/review-desktop.jpg)"
        ),
    ),
    Page("service.md", "Running it as a service", ("## Running it as a service",)),
    Page("configuration.md", "Configuration", ("## Configuration",)),
    Page("reliability.md", "Reliability", ("## Reliability",)),
    Page("performance.md", "Performance", ("## Performance",)),
    Page("security.md", "Security", ("## re:Security", "### Security review")),
    Page("contributing.md", "Contributing", ("## Layout", "## re:Contribut")),
)


PAGE_PATHS = frozenset(page.path for page in PAGES)


@dataclass
class Section:
    level: int  # 2 or 3
    title: str
    body: list[str] = field(default_factory=list)  # lines after the heading
    children: list[Section] = field(default_factory=list)
    page: Page | None = None


def parse(text: str) -> tuple[list[str], list[Section]]:
    """The lines before the first ``## `` heading, and the ``## `` sections with theirs."""
    intro: list[str] = []
    tops: list[Section] = []
    current: list[str] = intro
    fence = False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
        heading = None if fence else re.match(r"^(##|###) (.+?)\s*$", line)
        if heading:
            level = len(heading.group(1))
            section = Section(level, heading.group(2))
            if level == 2:
                tops.append(section)
            elif not tops:
                raise SystemExit(f"README.md: '### {section.title}' comes before any '## ' heading")
            else:
                tops[-1].children.append(section)
            current = section.body
        else:
            current.append(line)
    return intro, tops


def _matches(selector: str, section: Section) -> bool:
    hashes, _, name = selector.partition(" ")
    if len(hashes) != section.level:
        return False
    if name.startswith("re:"):
        return re.match(name[3:], section.title) is not None
    return name == section.title


def assign(tops: list[Section]) -> list[str]:
    """Give each section its page; return the problems (unplaced sections, missing pages)."""
    problems: list[str] = []
    for page in PAGES:
        found = False
        for top in tops:
            for section in (top, *top.children):
                if section.page is None and any(_matches(s, section) for s in page.sections):
                    section.page = page
                    found = True
        if not found and not page.optional:
            problems.append(f"docs/{page.path}: none of {list(page.sections)} is in README.md")
    for top in tops:
        if top.page is None:
            problems.append(
                f"README.md: '## {top.title}' goes to no page; add it to PAGES in {Path(__file__).name}"
            )
    return problems


def github_slug(title: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"[^\w\- ]", "", title.lower().replace("`", ""))
    return text.replace(" ", "-")


def mkdocs_slug(title: str) -> str:
    """The anchor MkDocs (Python-Markdown's toc) gives a heading."""
    text = re.sub(r"[`*_]", "", title)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _extract(intro_tops: list[Section], word: str) -> list[str]:
    """The platform table's header and rows naming ``word``, and the bullets that start with it."""
    platforms = next((s for s in intro_tops if s.title == "Platforms"), None)
    if platforms is None:
        return []
    lines = platforms.body
    out: list[str] = []
    table = [line for line in lines if line.startswith("|")]
    rows = [line for line in table[2:] if f"`{word}`" in line.split("|")[1]]
    if rows:
        out += [*table[:2], *rows, ""]
    bullet: list[str] = []
    for line in [*lines, ""]:
        if line.startswith("- ") or not line.startswith("  "):
            if bullet and bullet[0][2:].lower().startswith(word):
                out += bullet
            bullet = [line] if line.startswith("- ") else []
        elif bullet:
            bullet.append(line)
    return out


def render(tops: list[Section]) -> dict[str, str]:
    """The text of every page, and links between sections pointed at their new pages."""
    anchors: dict[str, tuple[str, str]] = {}
    pages: dict[str, list[str]] = {page.path: [] for page in PAGES}
    placed: dict[str, list[tuple[Page, Section, bool]]] = {page.path: [] for page in PAGES}
    for top in tops:
        for section in (top, *top.children):
            assert section.page is not None or section.level == 3
            own = section.page or top.page
            assert own is not None
            if section.level == 3 and section.page is None:
                continue  # rendered with its parent
            placed[own.path].append((own, section, section is top))
    for page in PAGES:
        entries = placed[page.path]
        # A page made of one "## " section takes that section's heading as its title.
        single = len(entries) == 1 and entries[0][1].level == 2
        lines = pages[page.path]
        title = entries[0][1].title if single and page.title == entries[0][1].title else page.title
        lines += [f"# {title}", ""]
        if page.lead:
            lines += [page.lead, ""]
        for _page, section, _is_top in entries:
            shift = -1 if single else (0 if section.level == 2 else -1)
            blocks: list[tuple[int, Section]] = [(section.level, section)]
            if section.level == 2:
                blocks += [(3, child) for child in section.children if child.page is None]
            for level, block in blocks:
                if not (single and block is section):
                    heading_level = max(2, level + shift)
                    lines += ["#" * heading_level + " " + block.title]
                    anchors.setdefault(
                        github_slug(block.title), (page.path, mkdocs_slug(block.title))
                    )
                else:
                    heading_level = 1
                    anchors.setdefault(github_slug(block.title), (page.path, ""))
                lines += _deeper_headings(block.body, heading_level - level, page.path, anchors)
        if not entries and page.extract:
            lines += _extract(tops, page.extract)
    out: dict[str, str] = {}
    for path, lines in pages.items():
        text = "\n".join(_single_blank_lines(lines)).strip() + "\n"
        out[path] = _relink(text, path, anchors)
    return out


def _deeper_headings(
    body: list[str], shift: int, path: str, anchors: dict[str, tuple[str, str]]
) -> list[str]:
    """A section's own "#### " headings, moved by as many levels as the section's heading."""
    out: list[str] = []
    fence = False
    for line in body:
        if line.startswith("```"):
            fence = not fence
        heading = None if fence else re.match(r"^(#{4,6}) (.+?)\s*$", line)
        if heading:
            title = heading.group(2)
            level = max(2, min(6, len(heading.group(1)) + shift))
            anchors.setdefault(github_slug(title), (path, mkdocs_slug(title)))
            line = "#" * level + " " + title
        out.append(line)
    return out


def _single_blank_lines(lines: list[str]) -> list[str]:
    """One blank line between blocks (as the README has), code blocks left as they are."""
    out: list[str] = []
    fence = False
    for line in lines:
        if line.startswith("```"):
            fence = not fence
        if not fence and not line.strip() and out and not out[-1].strip():
            continue
        out.append(line)
    return out


def _relink(text: str, path: str, anchors: dict[str, tuple[str, str]]) -> str:
    here = Path(path).parent

    def fix(match: re.Match[str]) -> str:
        label, target = match.group(1), match.group(2)
        if re.match(r"^[a-z]+:", target):
            return match.group(0)  # http:, https:, mailto:
        file, _, anchor = target.partition("#")
        if file in ("", "README.md"):
            if anchor not in anchors:
                print(
                    f"docs/{path}: link to #{anchor} has no section; left as text", file=sys.stderr
                )
                return label
            page, slug = anchors[anchor]
            rel = "" if page == path else os.path.relpath(page, here).replace(os.sep, "/")
            return f"[{label}]({rel}{'#' + slug if slug else ''})"
        if os.path.normpath(here / file).replace(os.sep, "/") in PAGE_PATHS:
            return match.group(0)  # already a link between pages
        if file.startswith("docs/"):
            rel = os.path.relpath(file[5:], here).replace(os.sep, "/")
            return f"[{label}]({rel}{'#' + anchor if anchor else ''})"
        # A file of the repository outside docs/: the site cannot link it.
        return label if label.startswith("`") else f"`{label}`"

    return re.sub(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)\)", fix, text)


def quick_start_commands(tops: list[Section]) -> str:
    start = next((s for s in tops if s.title == "Quick start"), None)
    if start is None:
        raise SystemExit("README.md has no '## Quick start'")
    body = "\n".join(start.body)
    block = re.search(r"```sh\n.*?```", body, re.S)
    if block is None:
        raise SystemExit("README.md: '## Quick start' has no ```sh block")
    return block.group(0)


def landing_index(landing: str) -> str:
    """The site's home page: the landing page, its links into docs/ made relative."""
    text = landing.replace(LANDING_MARK + "\n", "")
    text = re.sub(r"\]\(docs/", "](", text)
    return re.sub(r'src="docs/', 'src="', text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="say where each section goes")
    parser.add_argument("--apply", action="store_true", help="also replace README.md")
    args = parser.parse_args(argv)

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    if LANDING_MARK in readme:
        raise SystemExit("README.md is already the landing page: edit the pages in docs/")
    _intro, tops = parse(readme)
    problems = assign(tops)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    if args.check:
        for top in tops:
            assert top.page is not None
            print(f"## {top.title} -> docs/{top.page.path}")
            for child in top.children:
                print(f"   ### {child.title} -> docs/{(child.page or top.page).path}")
        return 0
    landing = LANDING.read_text(encoding="utf-8")
    commands = quick_start_commands(tops)
    if commands not in landing:
        print(
            f"{LANDING.relative_to(ROOT)} lacks the Quick start's commands as README.md has them:\n"
            f"{commands}",
            file=sys.stderr,
        )
        return 1
    for path, text in render(tops).items():
        target = DOCS / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        print(f"docs/{path}: {len(text):,} characters")
    (DOCS / "index.md").write_text(landing_index(landing), encoding="utf-8")
    print("docs/index.md: the landing page")
    if args.apply:
        (ROOT / "README.md").write_text(landing, encoding="utf-8")
        print(f"README.md: the landing page, {len(landing):,} characters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
