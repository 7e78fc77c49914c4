"""MkDocs hooks for the API reference (mkdocs.yml ``hooks:``).

The docstrings are written for plain reading and Sphinx: ``:class:`X``` roles
and reST definition lists (a term line, then its text indented by four
spaces). mkdocstrings renders Markdown, where the role names stay literal and
a definition list runs into one paragraph. These hooks drop the role names and
turn such paragraphs into HTML definition lists.
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj):(?=<code>)")
_PARAGRAPH = re.compile(r"<p>(.*?)</p>", re.S)


def _definition_list(match: re.Match[str]) -> str:
    lines = match.group(1).split("\n")
    if len(lines) < 2 or lines[0].startswith("    ") or not lines[1].startswith("    "):
        return match.group(0)
    items: list[tuple[str, list[str]]] = []
    for line in lines:
        if line.startswith("    ") and items:
            items[-1][1].append(line.strip())
        elif line.startswith("    "):
            return match.group(0)
        elif items and not items[-1][1]:
            # A term that goes on over several lines.
            items[-1] = (items[-1][0] + " " + line.strip(), [])
        else:
            items.append((line.strip(), []))
    if any(not text for _, text in items):
        return match.group(0)
    body = "".join(f"<dt>{term}</dt><dd>{' '.join(text)}</dd>" for term, text in items)
    return f"<dl>{body}</dl>"


def on_page_content(html: str, **kwargs: Any) -> str:
    html = _ROLE.sub("", html)
    if "doc-contents" in html:  # API pages only: mkdocstrings' output
        html = _PARAGRAPH.sub(_definition_list, html)
    return html
