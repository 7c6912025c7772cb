"""Just enough Markdown for the model card (gemcast.card): headings, paragraphs, lists, tables,
inline code, bold and the one image. Every piece of text is escaped; no raw HTML passes.

A full Markdown library would be one more dependency for one page whose shape we write ourselves.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from markupsafe import Markup, escape

_IMAGE = re.compile(r"^!\[([^\]]*)\]\(([^)\s]+)\)$")
_INLINE = re.compile(r"`([^`]+)`|\*\*([^*]+)\*\*")


def _inline(text: str) -> str:
    out, last = [], 0
    for match in _INLINE.finditer(text):
        out.append(str(escape(text[last : match.start()])))
        if match.group(1) is not None:
            out.append(f"<code>{escape(match.group(1))}</code>")
        else:
            out.append(f"<strong>{escape(match.group(2))}</strong>")
        last = match.end()
    out.append(str(escape(text[last:])))
    return "".join(out)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def render(markdown: str, image_src: Callable[[str], str | None], heading_offset: int = 1) -> Markup:
    """HTML for ``markdown``; ``image_src(name)`` gives an image's URL, or None to drop it."""
    html: list[str] = []
    paragraph: list[str] = []
    items: list[str] = []
    lines = markdown.splitlines()

    def flush() -> None:
        if paragraph:
            html.append(f"<p>{_inline(' '.join(paragraph))}</p>")
            paragraph.clear()
        if items:
            html.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>")
            items.clear()

    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        stripped = line.strip()
        if not stripped:
            flush()
        elif stripped.startswith("#"):
            flush()
            level = min(len(stripped) - len(stripped.lstrip("#")) + heading_offset, 6)
            html.append(f"<h{level}>{_inline(stripped.lstrip('#').strip())}</h{level}>")
        elif stripped.startswith("|") and i + 1 < len(lines) and set(lines[i + 1].strip()) <= set("|-: "):
            flush()
            head = _cells(stripped)
            i += 2
            rows = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            html.append(
                '<div class="table-wrap"><table><thead><tr>'
                + "".join(f'<th scope="col">{_inline(h)}</th>' for h in head)
                + "</tr></thead><tbody>"
                + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows)
                + "</tbody></table></div>"
            )
            continue
        elif stripped.startswith("- "):
            if paragraph:
                flush()
            items.append(stripped[2:])
        elif items and line.startswith("  "):
            items[-1] += " " + stripped  # a list item continued on the next line
        elif match := _IMAGE.match(stripped):
            flush()
            src = image_src(match.group(2))
            if src:
                html.append(f'<figure><img src="{escape(src)}" alt="{escape(match.group(1))}"></figure>')
        else:
            if items:
                flush()
            paragraph.append(stripped)
        i += 1
    flush()
    return Markup("\n".join(html))
