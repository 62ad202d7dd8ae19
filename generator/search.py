"""The site's search index: one script, loaded only when a reader starts a search.

``search/index.js`` sets ``atlasSearchIndex`` to ``[location, title, text, picture]`` entries:
one per section of the pages mkdocs built (their titles and text, read from the built HTML;
a section's title begins with its page's) and one per unit page, with the unit's small
picture ("" for none). ``assets/search.js`` adds the search box to the header and loads the index
by a script tag on first use, which works from file:// as over http, so the index is
stored once and costs a page nothing until it is used.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

INDEX = Path("search") / "index.js"


class _Sections(HTMLParser):
    """The text of a built page's article, cut into sections at its ``h1``/``h2`` headings."""

    SKIPPED = {"script", "style", "svg", "button"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.sections: list[dict[str, str]] = []  # {"anchor", "title", "text"}
        self.depth = 0  # inside the article
        self.heading: str | None = None  # the heading tag being read
        self.skipping = 0

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if self.depth and self.sections:
            self.sections[-1]["title" if self.heading else "text"] += " "  # elements are words apart
        if tag == "article":
            self.depth += 1
        elif self.depth and tag in self.SKIPPED:
            self.skipping += 1
        elif self.depth and tag in ("h1", "h2"):
            self.heading = tag
            self.sections.append({"anchor": "" if tag == "h1" else attributes.get("id") or "", "title": "",
                                  "text": ""})

    def handle_endtag(self, tag):
        if tag == "article":
            self.depth -= 1
        elif self.depth and tag in self.SKIPPED:
            self.skipping -= 1
        elif tag == self.heading:
            self.heading = None

    def handle_data(self, data):
        if not self.depth or self.skipping or not self.sections:
            return
        self.sections[-1]["title" if self.heading else "text"] += data


def page_entries(site: Path, pages: list[str], placeholder: str = "") -> list[list[str]]:
    """Search entries for the built ``pages`` (paths from the site root), one per section;
    ``placeholder`` (text that stands for content filled in later) is left out."""
    entries = []
    for page in pages:
        reader = _Sections()
        reader.feed((site / page).read_text(encoding="utf-8").replace(placeholder, ""))
        heading = ""
        for section in reader.sections:
            title = " ".join(section["title"].replace("¶", "").split())
            if section["anchor"]:  # a section: named with its page, so that results say where they are
                title = f"{heading}: {title}" if heading else title
            else:
                heading = title
            location = f"{page}#{section['anchor']}" if section["anchor"] else page
            entries.append([location, title, " ".join(section["text"].split()), ""])
    return entries


def write_index(site: Path, entries: list[list[str]]) -> None:
    """Write the index script. Entries are data: the search script shows them as text."""
    text = json.dumps(entries, ensure_ascii=False, separators=(",", ":"))
    (site / INDEX).parent.mkdir(parents=True, exist_ok=True)
    (site / INDEX).write_text(f"var atlasSearchIndex={text};\n", encoding="utf-8")
