"""Tables for people: one number formatter, one met/missed rule, Markdown and HTML tables, and the one
HTML page shell that the run report and the fleet report share. Imports nothing from the rest of dcanas,
so every layer that prints a table (profile, latency, run) can use it."""
from __future__ import annotations

import html
from typing import Any, Optional, Sequence

# "noise": over as profiled, but timed again within the budget or its noise (profile.verdict's latency_check); not a failure
MET = {True: "met", False: "MISSED", None: "not counted", "noise": "within noise"}
MARK = {True: "✅", False: "❌", None: "–", "noise": "≈"}  # the terminal's tables
_CLASS = {"met": "ok", "passed": "ok", "pass": "ok", "yes": "ok", "MISSED": "bad", "FAILED": "bad", "FAIL": "bad"}  # words, not emoji


def met_text(met: Optional[bool | str]) -> str:
    """A budget's state in words: met, MISSED, within noise, or not counted (the quantity could not be measured)."""
    return MET[met]


def number_text(v: Any) -> str:
    """A value in a table cell: thousands separated, small floats in 3 significant digits, others with at most 3
    decimals (trailing zeros dropped); None is n/a, booleans are yes/no, text stays as it is."""
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v != v:
            return "nan"
        if v != 0 and abs(v) < 0.01:
            return f"{v:.3g}"
        return f"{v:,.3f}".rstrip("0").rstrip(".")
    return str(v)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows])


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    return ("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in header) + "</tr>"
            + "".join("<tr>" + "".join(f"<td class=\"{_CLASS.get(c, '')}\">{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
            + "</table>")


def md_and_html(rows: list[list[str]], header: list[str]) -> tuple[str, str]:
    """The same table in Markdown and in HTML (cells that say met/MISSED are coloured in HTML)."""
    return markdown_table(header, rows), html_table(header, rows)


def column_table(cols: list[dict[str, Any]]) -> list[list[str]]:
    """Rows of (quantity, column 1, column 2, ...) from per-device columns, rows in first-seen order."""
    keys: list[str] = []
    for c in cols:
        keys += [k for k in c if k not in keys and k != "device"]
    return [[k] + [number_text(c.get(k)) for c in cols] for k in keys]


def format_columns(cols: list[dict[str, Any]]) -> str:
    return markdown_table([""] + [c["device"] for c in cols], column_table(cols))


def html_page(title: str, verdict_line: str, passed: bool, body: str, width: int = 1100) -> str:
    """A self-contained page: the title, the verdict line coloured by ``passed``, then ``body`` (HTML)."""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:{width}px;margin:2em auto;color:#222}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #bbb;padding:4px 10px;text-align:right}}td:first-child{{text-align:left}}th{{background:#eee}}
img{{max-width:100%;border:1px solid #ddd}}td.ok{{background:#d8f0d8}}td.bad{{background:#f6d0d0;font-weight:bold}}
.verdict{{font-size:1.3em;padding:.5em;background:{'#e6f4e6' if passed else '#fbe4e4'}}}</style></head><body>
<h1>{html.escape(title)}</h1><p class="verdict" id="verdict">{html.escape(verdict_line)}</p>{body}</body></html>"""


def part_order(per_cell: dict[str, float]) -> list[str]:
    """The parts in network order: stem, cell 0, cell 1, ..., head, other."""
    rank = {"stem": 0, "cell": 1, "head": 2}
    return sorted(per_cell, key=lambda k: (rank.get(k.split()[0], 3), int(k.split()[1]) if k.startswith("cell ") else 0))
