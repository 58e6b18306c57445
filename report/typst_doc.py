"""Typst markup for report/build.py: escaping, headings, paragraphs, figures, monospace blocks and
tables, collected in a Doc whose `source()` is a readable .typ file.

Figures are referenced by path relative to the .typ file's folder; build.py compiles with a Typst
root that holds both that folder and the runs folder (Typst reads no file outside its root), so
the same command compiles the source on its own:  typst compile --root ROOT report.typ
Each image prints at its own size (pixels / dpi from the PNG's pHYs chunk, as matplotlib writes
it), capped at the text width and at MAX_HEIGHT_IN, so a figure's fonts print at their point size.
"""
import os
import re
from dataclasses import dataclass
from pathlib import Path

TEXT_WIDTH_IN = 6.5     # US letter with 1 in margins (plots.PRINT_WIDTH_IN)
MAX_HEIGHT_IN = 7.8     # leaves room for the caption on a 9 in tall text area
DEFAULT_DPI = 200       # plots.DPI, for a PNG without a pHYs chunk

_SPECIAL = re.compile(r"([\\#$*_@<>\[\]`~+=/-])")


def escape(text: str) -> str:
    """Plain text as Typst markup that prints exactly that text: every markup character gets a
    backslash (so no emphasis, math, label, list, heading or comment), and a number that starts a
    line keeps its '.' (else '1.' would open a numbered list)."""
    out = _SPECIAL.sub(r"\\\1", str(text))
    return re.sub(r"(?m)^(\s*\d+)\.", r"\1\\.", out)


def string(text: str) -> str:
    """A Typst string literal."""
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def png_info(path) -> tuple[int, int, float] | None:
    """(width px, height px, dots per inch) from a PNG's header and pHYs chunk; None if it is not a PNG."""
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 16)
    except OSError:
        return None
    if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 24:
        return None
    w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if not (w and h):
        return None
    dpi = DEFAULT_DPI
    i = data.find(b"pHYs")
    if i >= 0 and len(data) >= i + 13 and data[i + 12] == 1:  # unit 1: pixels per metre
        dpi = int.from_bytes(data[i + 4:i + 8], "big") * 0.0254
    return w, h, dpi or DEFAULT_DPI


def print_width_in(path, max_width=TEXT_WIDTH_IN, max_height=MAX_HEIGHT_IN) -> float:
    """Printed width (inches) of a PNG: its natural size, capped at the text width and height."""
    w, h, dpi = png_info(path) or (1, 1, 1)
    width = w / dpi
    return round(min(width, max_width, max_height * w / h), 2)


@dataclass
class Float:
    """A figure (or a row of figures) that floats, or, once its item turns out to end with it
    (Doc._anchor_trailing_floats), stands in place: the markup of both, one chosen when written."""
    floating_markup: str
    in_place_markup: str
    floating: bool = True

    def __str__(self) -> str:
        return self.floating_markup if self.floating else self.in_place_markup


class Doc:
    """Typst source built top to bottom; figures numbered by Typst, referenced by label."""

    def __init__(self, typ_dir: Path):
        self.typ_dir, self.parts, self.figures = Path(typ_dir).resolve(), [], []

    def raw(self, markup: "str | Float"):
        self.parts.append(markup)

    FLUSH_LEVEL = 4  # floating figures stay within their item (2(a)(e)): none drifts past the next heading

    def heading(self, level: int, text: str, label: str | None = None, outlined: bool = True, new_page: bool = True):
        """new_page: a level-1 heading (a part, an appendix) opens a page, unless False (the page
        goes on: no half-empty page before it)."""
        mark = "=" * level
        body = f"{mark} {escape(text)}" + (f" <{label}>" if label else "")
        if level <= self.FLUSH_LEVEL:
            self._anchor_trailing_floats()
            self.raw("#place.flush()")
        if level == 1 and new_page:
            self.raw("#pagebreak(weak: true)")
        self.raw(body if outlined else f"#heading(level: {level}, outlined: false)[{escape(text)}]")

    def _anchor_trailing_floats(self):
        """Floating figures with no text after them in their item are set in place instead: a float
        issued just before a heading can land on the next page below that heading (place.flush
        does not stop the heading flowing above a float at the page's bottom)."""
        for part in reversed(self.parts):
            if not (isinstance(part, Float) and part.floating):
                break
            part.floating = False

    def para(self, *texts: str):
        for t in texts:
            if t and str(t).strip():
                self.raw(escape(t))

    def note(self, text: str):
        """A small gray line (whose words these are, what is missing)."""
        self.raw(f"#note[{escape(text)}]")

    def mono(self, text: str, size_pt: float = 7.5, columns: int = 1):
        """A monospace block that wraps long lines instead of running off the page, printed at
        size_pt (Typst otherwise sets raw text at 0.8 of the size around it); columns > 1 sets it in
        that many columns (long program output in less of a page)."""
        body = f"#show raw: set text(size: {size_pt}pt); #raw(block: true, {string(text)})"
        if columns > 1:
            body = f"#columns({columns}, gutter: 10pt)[{body}]"
        self.raw(f"#block(width: 100%, fill: luma(245), inset: 6pt, breakable: true)[{body}]")

    def table(self, header: list, rows: list, align: str | None = None, size_pt: float = 8.5):
        self.raw(f"#block(above: 8pt, below: 10pt)[#set text(size: {size_pt}pt)\n{_table(header, rows, align)}]")

    def tables_row(self, tables: list, size_pt: float = 8.5):
        """[(header, rows, align)] side by side, each in an equal share of the text width (one alone:
        full width); align as in table() (None: the first column left, the others right)."""
        if len(tables) < 2:
            for header, rows, align in tables:
                self.table(header, rows, align, size_pt=size_pt)
            return
        cells = ", ".join(f"[{_table(*table)}]" for table in tables)
        # not breakable: a page break would leave one table's last rows under the next item
        self.raw(f"#block(above: 8pt, below: 10pt, breakable: false)[#set text(size: {size_pt}pt)\n"
                 f"#grid(columns: {len(tables)}, column-gutter: 10pt, align: top,\n  {cells})]")

    def figure(self, path, caption: str, label: str, max_width=TEXT_WIDTH_IN, floating=True):
        """A figure at its own printed size, floating to the top or bottom of this page or the next
        (so a figure too tall for the rest of a page leaves no gap: the text flows on); in place
        with floating=False (a run of figures under one heading, which must not float above it)."""
        rel, width = self._file(path, max_width)
        self.raw(Float(_figure_markup(rel, width, caption, label, floating=True),
                       _figure_markup(rel, width, caption, label, floating=False), floating))

    def _file(self, path, max_width=TEXT_WIDTH_IN) -> tuple[str, float]:
        """A figure's file: recorded in self.figures; its path relative to the source and printed width."""
        self.figures.append(Path(path))
        return os.path.relpath(Path(path).resolve(), self.typ_dir), print_width_in(path, max_width)

    def _figure(self, path, caption, label, max_width=TEXT_WIDTH_IN) -> str:
        return _figure_markup(*self._file(path, max_width), caption, label, floating=False)

    def figures_row(self, figures: list, floating: bool = True):
        """[(path, caption, label)] side by side when their printed widths fit the text width
        together (each still at its own size), else one below the other; floating like figure(),
        or in place with floating=False (the first figures of a part, which must not rise above
        its heading)."""
        widths = [print_width_in(p) for p, _, _ in figures]
        if len(figures) < 2 or sum(widths) + 0.1 * (len(figures) - 1) > TEXT_WIDTH_IN:
            for fig in figures:
                self.figure(*fig, floating=floating)
            return
        cells = ", ".join(f"[{self._figure(*fig)}]" for fig in figures)
        cols = ", ".join(f"{w}in" for w in widths)
        grid = f"grid(columns: ({cols}), column-gutter: 1fr, align: top,\n  {cells})"
        self.raw(Float(f"#place(auto, float: true, clearance: 12pt, {grid})", f"#{grid}", floating))

    def source(self) -> str:
        """The markup, with each ref() marker turned into a reference if its label exists (a figure
        whose file is missing has none: Typst would stop at a reference to it)."""
        parts = list(map(str, self.parts))
        labels = set(re.findall(r"(?<!\\)<([A-Za-z][\w-]*)>", "\n".join(parts)))  # escaped text has \<
        text = "\n\n".join(parts) + "\n"
        return re.sub(REF + r"([\w\\-]+)" + REF, lambda m: (
            "@" + m.group(1).replace("\\", "") if m.group(1).replace("\\", "") in labels else "(missing)"), text)


def _figure_markup(rel: str, width: float, caption: str, label: str, floating: bool) -> str:
    place = ", placement: auto" if floating else ""
    return f"#figure(image({string(rel)}, width: {width}in){place},\n  caption: [{escape(caption)}]) <{label}>"


def _table(header: list, rows: list, align: str | None = None) -> str:
    cells = ", ".join(f"[*{escape(h)}*]" for h in header)
    body = ", ".join(f"[{escape(c)}]" for r in rows for c in r)
    align = align or "(" + ", ".join(["left"] + ["right"] * (len(header) - 1)) + ")"
    return (f"#table(columns: {len(header)}, align: {align}, stroke: 0.4pt + luma(160), inset: 4pt,\n"
            f"  table.header({cells}),\n  {body})")  # the header repeats on a page the table runs onto


REF = "\u2063"  # invisible separator: brackets a label in plain text, survives escape()


def ref(label: str) -> str:
    """A cross-reference to put in plain text ('see ' + ref('fig-x')); Doc.source resolves it."""
    return f"{REF}{label}{REF}"


PREAMBLE = r"""// The convlens report. Made by report/build.py from a runs folder; edit {answers}, not this file.
// Compile on its own:  typst compile --root {root} {name}
#set document(title: "{title}", author: "{author}")
#set page(paper: "us-letter", margin: 1in, numbering: "1",
  footer: context [#set text(size: 8pt, fill: luma(90)); #h(1fr) page #counter(page).display() of #counter(page).final().first() #h(1fr)])
#set text(size: 10pt)
#set par(justify: true)
#set smartquote(enabled: false)
#set heading(numbering: none)
#show heading.where(level: 1): it => {{ set text(size: 17pt); block(above: 18pt, below: 14pt, it) }}
#show heading.where(level: 2): set text(size: 13pt)
#show heading.where(level: 3): set text(size: 11pt)
#show heading: set text(hyphenate: false)
#show table: set par(justify: false)
#show table: set text(hyphenate: false)
#show figure.caption: set text(size: 9pt)
#show figure: set block(above: 10pt, below: 12pt)
#show raw: set text(font: ("DejaVu Sans Mono", "Liberation Mono"))
#let note(body) = block(above: 4pt, below: 8pt, text(size: 8.5pt, fill: luma(80), style: "italic", body))
"""
