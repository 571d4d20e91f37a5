"""One self-contained HTML page: figures as base64 data URIs, tables, run metadata, no links out.

The page carries a small inline script that, once loaded, checks every image (decoded, non-zero
size, and not a single flat colour when drawn to a canvas) and writes the verdict into the
element ``#image-check`` (attributes ``data-images``, ``data-bad``, ``data-status``), so a
headless browser can confirm that the page renders.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass

import pandas as pd


@dataclass
class FigureEntry:
    """One figure of the page.

    Attributes:
        name: file stem (``accuracy-digits``); title, caption: text shown with it.
        png: the PNG bytes embedded in the page; files: the file names written beside it.
    """

    name: str
    title: str
    caption: str
    png: bytes
    files: list[str]


@dataclass
class Skipped:
    """A figure the run has no data for: its name, title and the one-line reason."""

    name: str
    title: str
    reason: str


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222;
       background: #fff; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; font-size: .85em; margin: .5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; white-space: nowrap; }
.scroll { overflow-x: auto; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
table.meta td { text-align: left; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .85em; color: #555; } .skipped { color: #8a5a00; }
pre { background: #f6f6f6; padding: .8em; overflow-x: auto; font-size: .8em; }
#image-check { font-size: .8em; color: #555; }
"""

# Checks every <img> after load; the verdict goes into #image-check for headless browsers.
CHECK_SCRIPT = """
window.addEventListener("load", function () {
  var images = document.getElementsByTagName("img"), bad = [];
  for (var i = 0; i < images.length; i++) {
    var img = images[i];
    if (!img.complete || img.naturalWidth === 0 || img.naturalHeight === 0) {
      bad.push(img.alt + " (not loaded)"); continue;
    }
    var canvas = document.createElement("canvas");
    canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
    var ctx = canvas.getContext("2d");
    ctx.drawImage(img, 0, 0);
    var px = ctx.getImageData(0, 0, canvas.width, canvas.height).data, differs = 0;
    for (var p = 4; p < px.length; p += 4) {
      if (px[p] !== px[0] || px[p + 1] !== px[1] || px[p + 2] !== px[2]) { differs++; }
    }
    if (differs < 100) { bad.push(img.alt + " (blank)"); }
  }
  var out = document.getElementById("image-check");
  out.setAttribute("data-images", String(images.length));
  out.setAttribute("data-bad", String(bad.length));
  out.setAttribute("data-status", bad.length === 0 ? "ok" : "failed");
  out.textContent = "Image check: " + (images.length - bad.length) + " of " + images.length +
    " figures rendered" + (bad.length ? "; failed: " + bad.join(", ") : ".");
});
"""


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def table_html(table: pd.DataFrame) -> str:
    """An escaped HTML table without the index (NaN shown as an em dash), scrolling sideways."""
    inner = table.to_html(index=False, escape=True, na_rep="—", border=0,
                          float_format=lambda v: f"{v:.4g}")
    return f'<div class="scroll">{inner}</div>'


def meta_html(meta: list[tuple[str, str]]) -> str:
    """Two-column table of (label, value) pairs."""
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                   for k, v in meta)
    return f'<table class="meta">{rows}</table>'


def figure_html(entry: FigureEntry) -> str:
    """A <figure> with the embedded image, its caption and the files written."""
    files = ", ".join(entry.files)
    return (f'<figure id="fig-{html.escape(entry.name)}"><h3>{html.escape(entry.title)}</h3>'
            f'<img alt="{html.escape(entry.name)}" src="{data_uri(entry.png)}">'
            f"<figcaption>{html.escape(entry.caption)} Files: {html.escape(files)}."
            "</figcaption></figure>")


def render_page(
    title: str,
    meta: list[tuple[str, str]],
    tables: list[tuple[str, pd.DataFrame, str]],
    figures: list[FigureEntry],
    skipped: list[Skipped],
    config: str | None = None,
    appendix: str = "",
) -> str:
    """The whole page as a string.

    Args:
        meta: run metadata as (label, value) pairs.
        tables: (heading, table, note) shown before the figures.
        figures: the drawn figures, in order; skipped: the figures left out, with reasons.
        config: the run's ``config.yaml`` text, shown verbatim when given.
        appendix: trusted HTML put after the figures (e.g. a card's JSON block).
    """
    parts = [f"<h1>{html.escape(title)}</h1>", "<h2>Run</h2>", meta_html(meta)]
    if config:
        parts.append(f"<details><summary>config.yaml</summary><pre>{html.escape(config)}</pre>"
                     "</details>")
    for heading, table, note in tables:
        parts += [f"<h2>{html.escape(heading)}</h2>", f"<p>{html.escape(note)}</p>",
                  table_html(table)]
    parts.append("<h2>Figures</h2>")
    parts += [figure_html(entry) for entry in figures]
    if skipped:
        items = "".join(f"<li><b>{html.escape(s.title)}</b> ({html.escape(s.name)}): "
                        f"not drawn: {html.escape(s.reason)}.</li>" for s in skipped)
        parts.append(f'<h2>Figures not drawn</h2><ul class="skipped">{items}</ul>')
    if appendix:
        parts.append(appendix)
    parts.append('<p id="image-check" data-status="pending">Image check: pending.</p>')
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n"
            f"<body>\n{body}\n<script>{CHECK_SCRIPT}</script>\n</body></html>\n")
