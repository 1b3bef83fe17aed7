"""Comparison tables: several methods' scores of one set side by side, the best per metric marked.

``summarise`` turns the per-pair rows of each method into means and standard deviations over the
pairs (sample SD, n - 1; 0 for one pair) and picks the best method of each metric by its direction
(:data:`utils.metrics.LOWER_IS_BETTER`). Best means best as printed: means equal to the printed
four decimals all count. Non-finite means (a metric that gave inf or NaN on some pair) are never
best. A metric the images of some pairs were too small for is averaged over the others ("n/a"
when there are none). The writers render one summary as console text, Markdown, LaTeX, CSV or JSON.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.evaluation import csv_text, scored
from utils.files import write_text
from utils.metrics import higher_is_better

DECIMALS = 4


@dataclass
class Summary:
    methods: list[str]
    metrics: list[str]
    mean: dict[str, dict[str, float | None]]  # method -> metric -> mean over the pairs scored
    std: dict[str, dict[str, float | None]]
    best: dict[str, list[str]]  # metric -> the methods with the best printed mean
    pairs: int


def summarise(results: dict[str, list[dict]]) -> Summary:
    """Means, SDs and best methods of ``{method: rows}`` (rows as :func:`utils.evaluation.evaluate` gives)."""
    methods = list(results)
    metrics = [k for k in results[methods[0]][0] if k != "pair"]
    values = {m: {k: scored(rows, k) for k in metrics} for m, rows in results.items()}
    mean = {m: {k: float(np.mean(v)) if v else None for k, v in vs.items()} for m, vs in values.items()}
    std = {m: {k: (float(np.std(v, ddof=1)) if len(v) > 1 else 0.0) if v else None for k, v in vs.items()}
           for m, vs in values.items()}
    best = {}
    for k in metrics:
        shown = {m: round(mean[m][k], DECIMALS) for m in methods
                 if mean[m][k] is not None and math.isfinite(mean[m][k])}
        if shown:
            top = max(shown.values()) if higher_is_better(k) else min(shown.values())
            best[k] = [m for m, v in shown.items() if v == top]
        else:
            best[k] = []
    return Summary(methods, metrics, mean, std, best, len(results[methods[0]]))


def _value(s: Summary, method: str, metric: str, with_std: bool) -> str:
    v = s.mean[method][metric]
    if v is None:
        return "n/a"  # no pair was large enough for this metric
    text = f"{v:.{DECIMALS}f}" if math.isfinite(v) else str(v)
    return text + (f" ± {s.std[method][metric]:.{DECIMALS}f}" if with_std and math.isfinite(v) else "")


def arrow(metric: str) -> str:
    return "↑" if higher_is_better(metric) else "↓"


def text_table(s: Summary, with_std: bool = False, title: str = "") -> str:
    """Metrics as rows, methods as columns (fits a terminal for many metrics); best marked ``*``."""
    cells = {(k, m): _value(s, m, k, with_std) + ("*" if m in s.best[k] else " ") for k in s.metrics
             for m in s.methods}
    width = {m: max(len(m), *(len(cells[(k, m)]) for k in s.metrics)) for m in s.methods}
    name_w = max(6, *(len(k) for k in s.metrics))
    head = f"{'metric':<{name_w}}   " + "  ".join(f"{m:>{width[m]}}" for m in s.methods)
    lines = [title] if title else []
    lines += [head, "-" * len(head)]
    for k in s.metrics:
        lines.append(f"{k:<{name_w}} {arrow(k)} " + "  ".join(f"{cells[(k, m)]:>{width[m]}}" for m in s.methods))
    lines.append(f"mean over {s.pairs} pair(s){' ± SD' if with_std else ''}; ↑ higher is better, ↓ lower; "
                 "* best (ties as printed)")
    return "\n".join(lines)


#: Significant digits of the paper tables (--precision): per metric column, the decimals that
#: give its largest mean this many digits ("2217 ± 1174", "0.4497"), not 4 decimals everywhere.
SIGNIFICANT = 4
#: With more metrics than this (and more metrics than methods), paper tables put metrics in rows:
#: a 24-column tabular does not fit a page.
MAX_COLUMNS = 8


def column_decimals(s: Summary, digits: int = SIGNIFICANT) -> dict[str, int]:
    """Per metric, the decimals that give the column's largest finite |mean| ``digits`` significant digits."""
    out = {}
    for k in s.metrics:
        vals = [abs(v) for m in s.methods if (v := s.mean[m][k]) is not None and math.isfinite(v) and v != 0]
        out[k] = max(0, digits - 1 - math.floor(math.log10(max(vals, default=1.0))))
    return out


def printed_best(s: Summary, decimals: dict[str, int]) -> dict[str, list[str]]:
    """The best methods of each metric as the table prints them (ties at the printed decimals)."""
    best = {}
    for k in s.metrics:
        shown = {m: round(v, decimals[k]) for m in s.methods if (v := s.mean[m][k]) is not None and math.isfinite(v)}
        top = (max if higher_is_better(k) else min)(shown.values()) if shown else None
        best[k] = [m for m, v in shown.items() if v == top]
    return best


def _cell(s: Summary, m: str, k: str, with_std: bool, d: int) -> str:
    v = s.mean[m][k]
    if v is None:
        return "n/a"
    if not math.isfinite(v):
        return str(v)
    return f"{v:.{d}f}" + (f" ± {s.std[m][k]:.{d}f}" if with_std else "")


def metrics_as_rows(s: Summary, rows: str) -> bool:
    """``rows``: ``metrics``, ``methods`` or ``auto`` (metrics in rows when there are more than
    :data:`MAX_COLUMNS` of them and more metrics than methods)."""
    return rows == "metrics" or (rows == "auto" and len(s.metrics) > MAX_COLUMNS and len(s.metrics) > len(s.methods))


def grid(s: Summary, with_std: bool, digits: int, rows: str, bold, label) -> list[list[str]]:
    """The table as a list of rows of cells, header first: methods x metrics or the transpose;
    ``bold(text)`` marks a best cell, ``label(name)`` escapes a method's or metric's name."""
    d = column_decimals(s, digits)
    best = printed_best(s, d)
    cell = {(m, k): bold(_cell(s, m, k, with_std, d[k])) if m in best[k] else _cell(s, m, k, with_std, d[k])
            for m in s.methods for k in s.metrics}
    metric = {k: f"{label(k)} {arrow(k)}" for k in s.metrics}
    if metrics_as_rows(s, rows):
        return [["metric", *map(label, s.methods)], *([metric[k], *(cell[(m, k)] for m in s.methods)]
                                                      for k in s.metrics)]
    return [["method", *(metric[k] for k in s.metrics)], *([label(m), *(cell[(m, k)] for k in s.metrics)]
                                                          for m in s.methods)]


def markdown_table(s: Summary, with_std: bool = False, digits: int = SIGNIFICANT, rows: str = "auto") -> str:
    """A Markdown table, metrics with their direction, the best of each metric in bold; methods as
    rows or, with many metrics, metrics as rows (:func:`metrics_as_rows`)."""
    g = grid(s, with_std, digits, rows, lambda t: f"**{t}**", markdown_escape)
    lines = ["| " + " | ".join(g[0]) + " |", "|---|" + "---|" * (len(g[0]) - 1)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in g[1:]]) + "\n"


def markdown_escape(text: str) -> str:
    """A table cell's text: a ``|`` would end the cell (and a ``\\`` could unescape one)."""
    return text.replace("\\", "\\\\").replace("|", "\\|")


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIAL.get(c, c) for c in text)


def latex_table(s: Summary, with_std: bool = False, digits: int = SIGNIFICANT, rows: str = "auto") -> str:
    """A LaTeX ``tabular`` with booktabs rules (``\\usepackage{booktabs}``): directions as
    $\\uparrow$/$\\downarrow$, the best of each metric in bold; oriented as :func:`markdown_table`."""
    def label(name: str) -> str:
        return latex_escape(name)

    g = grid(s, with_std, digits, rows, lambda t: rf"\textbf{{{t}}}", label)
    g = [[c.replace(" ± ", r" $\pm$ ").replace(" ↑", r" $\uparrow$").replace(" ↓", r" $\downarrow$") for c in r]
         for r in g]
    g[0][0] = g[0][0].capitalize()
    lines = [r"\begin{tabular}{l" + "r" * (len(g[0]) - 1) + "}", r"\toprule", " & ".join(g[0]) + r" \\",
             r"\midrule", *(" & ".join(r) + r" \\" for r in g[1:]), r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_comparison_csv(results: dict[str, list[dict]], s: Summary, path: Path) -> None:
    """One row per method and pair, then a ``mean`` and an ``sd`` row per method (atomically;
    text cells that a spreadsheet would run as formulas are neutralised: :func:`csv_cell`)."""
    rows = [[m, r["pair"], *(r[k] for k in s.metrics)] for m, rs in results.items() for r in rs]
    for m in s.methods:
        rows += [[m, "mean", *(s.mean[m][k] for k in s.metrics)], [m, "sd", *(s.std[m][k] for k in s.metrics)]]
    write_text(path, csv_text(["method", "pair", *s.metrics], rows))


def _finite(v):
    return v if not isinstance(v, float) or math.isfinite(v) else None


def write_comparison_json(results: dict[str, list[dict]], s: Summary, path: Path, meta: dict) -> None:
    """Per method: folder (from ``meta``), rows, mean, sd; per metric: direction and best methods."""
    path.parent.mkdir(parents=True, exist_ok=True)
    methods = {m: {"fused": meta["fused"][m], "rows": [{k: _finite(v) for k, v in r.items()} for r in rows],
                   "mean": {k: _finite(v) for k, v in s.mean[m].items()},
                   "sd": {k: _finite(v) for k, v in s.std[m].items()}} for m, rows in results.items()}
    data = {**{k: v for k, v in meta.items() if k != "fused"}, "pairs": s.pairs, "methods": methods,
            "higher_is_better": {k: higher_is_better(k) for k in s.metrics}, "best": s.best}
    write_text(path, json.dumps(data, indent=1, ensure_ascii=False))
