"""Render a :class:`~clsweep.report.document.Document` as one offline HTML page, as Markdown, and
the benchmark tables as LaTeX.

The HTML page needs nothing but a browser: styles are inline, figures are embedded as base64 PNG,
there is no script and no external URL. The Markdown page links the same figures as PNG files in
``figures/`` beside it.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence

from clsweep.report.blocks import Code, Document, Facts, Figure, Table

__all__ = ["to_html", "to_latex", "to_markdown"]

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1180px;padding:1em 2em;
color:#222;line-height:1.45}
h1{margin-bottom:.1em}.sub{color:#666;margin-top:0}nav{background:#f5f5f5;padding:.5em 1em;border-radius:6px}
nav a{margin-right:1em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em}th,td{border:1px solid #ddd;padding:3px 8px;
text-align:left;vertical-align:top}th{background:#f0f0f0}td.num{text-align:right;font-variant-numeric:tabular-nums}
table.facts th{width:11em}caption{caption-side:bottom;color:#666;font-size:.9em;text-align:left;padding-top:.3em}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}figcaption{color:#555;font-size:.9em}
pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.85em}.warn{background:#fff3cd;border:1px solid #e0c060;
padding:.6em 1em;border-radius:6px}
"""


def _numeric(cell: str) -> bool:
    head = cell.split(" ")[0].lstrip("+-")
    return head.replace(".", "", 1).isdigit()


def _html_table(t: Table) -> str:
    out = ["<table>"]
    if t.caption:
        out.append(f"<caption>{html.escape(t.caption)}</caption>")
    out.append(
        "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in t.header) + "</tr></thead><tbody>"
    )
    for i, row in enumerate(t.rows):
        cells = []
        for j, cell in enumerate(row):
            text = html.escape(cell)
            if (i, j) in t.bold:
                text = f"<strong>{text}</strong>"
            cells.append(f'<td class="num">{text}</td>' if _numeric(cell) else f"<td>{text}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _html_figure(f: Figure) -> str:
    data = base64.b64encode(f.png).decode("ascii")
    return (
        f'<figure id="fig-{f.name}"><img alt="{html.escape(f.title)}" src="data:image/png;base64,{data}">'
        f"<figcaption><strong>{html.escape(f.title)}.</strong> {html.escape(f.caption)}</figcaption></figure>"
    )


def to_html(doc: Document) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(doc.title)}</title><style>{_CSS}</style></head><body>",
        f'<h1>{html.escape(doc.title)}</h1><p class="sub">{html.escape(doc.subtitle)}</p>',
    ]
    if doc.warning:
        parts.append(f'<p class="warn">{html.escape(doc.warning)}</p>')
    parts.append(
        "<nav>" + "".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in doc.sections) + "</nav>"
    )
    for section in doc.sections:
        parts.append(f'<section id="{section.id}"><h2>{html.escape(section.title)}</h2>')
        for block in section.blocks:
            if isinstance(block, Table):
                parts.append(_html_table(block))
            elif isinstance(block, Facts):
                parts.append(
                    '<table class="facts"><tbody>'
                    + "".join(
                        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in block.items
                    )
                    + "</tbody></table>"
                )
            elif isinstance(block, Code):
                parts.append(
                    f"<details><summary>{html.escape(block.title)}</summary>"
                    f"<pre>{html.escape(block.text)}</pre></details>"
                )
            elif isinstance(block, Figure):
                parts.append(_html_figure(block))
            else:
                parts.append(f"<p>{html.escape(block)}</p>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(t: Table) -> str:
    lines = [
        "| " + " | ".join(_md_cell(h) for h in t.header) + " |",
        "|"
        + "|".join(
            "---:" if t.rows and all(_numeric(r[j]) or r[j] == "-" for r in t.rows) else "---"
            for j in range(len(t.header))
        )
        + "|",
    ]
    for i, row in enumerate(t.rows):
        cells = [f"**{_md_cell(c)}**" if (i, j) in t.bold and c else _md_cell(c) for j, c in enumerate(row)]
        lines.append("| " + " | ".join(cells) + " |")
    if t.caption:
        lines += ["", f"*{t.caption}*"]
    return "\n".join(lines)


def to_markdown(doc: Document, figure_dir: str = "figures") -> str:
    out = [f"# {doc.title}", "", f"_{doc.subtitle}_", ""]
    if doc.warning:
        out += [f"> **Warning:** {doc.warning}", ""]
    out += ["Contents: " + " · ".join(f"[{s.title}](#{s.id})" for s in doc.sections), ""]
    for section in doc.sections:
        out += [f'<a id="{section.id}"></a>', "", f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Table):
                out.append(_md_table(block))
            elif isinstance(block, Facts):
                out.append(_md_table(Table(["", ""], [[f"**{k}**", v] for k, v in block.items])))
            elif isinstance(block, Code):
                out += [
                    f"<details><summary>{block.title}</summary>",
                    "",
                    "```yaml",
                    block.text.rstrip(),
                    "```",
                    "",
                    "</details>",
                ]
            elif isinstance(block, Figure):
                out += [
                    f"![{block.title}]({figure_dir}/{block.name}.png)",
                    "",
                    f"*{block.title}.* {block.caption}",
                ]
            else:
                out.append(block)
            out.append("")
    return "\n".join(out).rstrip() + "\n"


_LATEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def _tex(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in text)


def to_latex(tables: Sequence[tuple[str, Table]], sweep: str) -> str:
    """booktabs tables (``\\usepackage{booktabs}``), ± as ``$\\pm$``, the best per column in bold."""
    out = [
        f"% Benchmark tables of sweep {sweep}, written by `clsweep report`. Needs \\usepackage{{booktabs}}."
    ]
    for metric, t in tables:
        out += [
            "",
            f"% {metric}",
            "\\begin{table}[t]",
            "\\centering",
            "\\caption{" + _tex(t.caption).replace("±", "$\\pm$") + "}",
            "\\label{tab:" + f"{sweep}-{metric}".replace("_", "-") + "}",
            "\\begin{tabular}{l" + "c" * (len(t.header) - 1) + "}",
            "\\toprule",
            " & ".join(_tex(h) for h in t.header) + " \\\\",
            "\\midrule",
        ]
        for i, row in enumerate(t.rows):
            cells = []
            for j, cell in enumerate(row):
                text = _tex(cell).replace("±", "$\\pm$")
                cells.append(f"\\textbf{{{text}}}" if (i, j) in t.bold else text)
            out.append(" & ".join(cells) + " \\\\")
        out += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(out) + "\n"
