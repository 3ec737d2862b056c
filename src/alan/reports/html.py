"""An HTML report: sections of tables, PNG figures and H.264 videos.

Figures are embedded (base64), or, with `Report.link_figures`, linked by their relative path
when they lie inside the report's folder (a study report of thousands of recordings stays
small). A video inside the report's folder is always linked; any other video is embedded.
Files ending in .mp4 / .webm / .webp in `Section.figures` are shown as videos (WebP as an image).
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alan.artifacts import atomic_write_text

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;color:#222}
h1{font-size:1.6em} h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0} th,td{border:1px solid #ccc;padding:.3em .7em;text-align:right}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
figure{margin:1em 0} figcaption{color:#555;font-size:.9em} img,video{max-width:100%}
.warn{color:#a40}
.note{color:#555;font-size:.92em} code{background:#f4f4f4;padding:0 .2em}
"""


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[tuple[str, list[str], list[list[Any]]]] = field(default_factory=list)
    figures: list[tuple[Path, str]] = field(default_factory=list)


@dataclass
class Report:
    """Collects sections; `write(path)` renders one HTML file atomically."""

    title: str
    intro: str = ""
    sections: list[Section] = field(default_factory=list)
    link_figures: bool = False  # images inside the report's folder linked, not embedded

    def section(self, title: str) -> Section:
        s = Section(title)
        self.sections.append(s)
        return s

    def render(self, base: Path | None = None) -> str:
        """The HTML text; videos under `base` (the report's folder) are linked relatively."""
        out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>",
               f"<style>{_CSS}</style></head><body><h1>{html.escape(self.title)}</h1>"]
        if self.intro:
            out.append(f"<p class='note'>{html.escape(self.intro)}</p>")
        for s in self.sections:
            out.append(f"<h2>{html.escape(s.title)}</h2>")
            out += [f"<p>{html.escape(p)}</p>" for p in s.paragraphs]
            for caption, header, rows in s.tables:
                out.append(f"<table><caption>{html.escape(caption)}</caption><tr>")
                out += [f"<th>{html.escape(str(h))}</th>" for h in header]
                out.append("</tr>")
                for row in rows:
                    out.append("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>")
                out.append("</table>")
            for path, caption in s.figures:
                out.append(_figure(Path(path), caption, base, self.link_figures))
        out.append("</body></html>")
        return "\n".join(out)

    def write(self, path: str | Path) -> Path:
        atomic_write_text(path, self.render(Path(path).parent))
        return Path(path)


_VIDEO = {".mp4": "video/mp4", ".webm": "video/webm"}
_IMAGE = {".png": "image/png", ".webp": "image/webp", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def _figure(path: Path, caption: str, base: Path | None, link: bool = False) -> str:
    cap = f"<figcaption>{html.escape(caption)}</figcaption>"
    suffix = path.suffix.lower()
    if suffix in _VIDEO:
        src = _relative(path, base) or f"data:{_VIDEO[suffix]};base64,{base64.b64encode(path.read_bytes()).decode()}"
        return (f"<figure><video controls loop muted autoplay playsinline preload='metadata' "
                f"src='{html.escape(src)}' title='{html.escape(caption)}'></video>{cap}</figure>")
    src = _relative(path, base) if link else None
    if src is None:
        src = f"data:{_IMAGE.get(suffix, 'image/png')};base64,{base64.b64encode(path.read_bytes()).decode()}"
    return f"<figure><img src='{html.escape(src)}' alt='{html.escape(caption)}'>{cap}</figure>"


def _relative(path: Path, base: Path | None) -> str | None:
    """`path` relative to `base` as a URL path if it lies inside `base`, else None."""
    if base is None:
        return None
    try:
        rel = path.resolve().relative_to(Path(base).resolve())
    except ValueError:
        return None
    from urllib.parse import quote

    return quote(rel.as_posix())


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else str(value)
