"""Final-performance tables in Markdown, LaTeX and CSV (string builders are pure)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def _fmt(mean: float, lo: float, hi: float, digits: int) -> str:
    if pd.isna(mean):
        return "--"
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def wide(summary: pd.DataFrame, by: list[str], digits: int = 2, labels: dict | None = None,
         best=None) -> pd.DataFrame:
    """One row per group, one column per tag: 'mean [ci_low, ci_high]' (summary has a `tag` column);
    rows flagged in `best` are wrapped in ``**`` (bold in Markdown; LaTeX and HTML translate it)."""
    labels = labels or {}
    best = best if best is not None else [False] * len(summary)
    # the row's 'runs' is its largest count; a tag some of those runs never logged says its own
    most = summary.groupby(by, observed=True, sort=False)["n"].transform("max").to_numpy()
    text = [_fmt(m, lo, hi, digits) + (f" ({k} run{'s' if k != 1 else ''})" if k < top and not pd.isna(m) else "")
            for m, lo, hi, k, top in zip(summary["mean"], summary["ci_low"], summary["ci_high"], summary["n"], most)]
    cells = summary.assign(
        cell=[f"**{t}**" if b else t for t, b in zip(text, best)],
        column=[labels.get(t, t) for t in summary["tag"]],
    )
    n = cells.groupby(by, observed=True, sort=True)["n"].max().rename("runs")
    table = cells.pivot_table(index=by, columns="column", values="cell", aggfunc="first", observed=True, sort=True)
    cols = [labels.get(t, t) for t in dict.fromkeys(summary["tag"])]
    table = table[[c for c in cols if c in table.columns]]
    table = table.join(n)
    table.columns.name = None
    return table.reset_index()


def md_cell(value: object) -> str:
    """One Markdown cell: '|' escaped and line breaks as spaces, so a name holding either (legal in
    folder names and tags) cannot split its cell and shift the rest of the row under other headings."""
    return " ".join(str(value).splitlines()).replace("|", "\\|")


def to_markdown(table: pd.DataFrame) -> str:
    """GitHub-flavoured Markdown table."""
    cols = [md_cell(c) for c in table.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(" --- " for _ in cols) + "|"]
    for row in table.itertuples(index=False):
        lines.append("| " + " | ".join("" if pd.isna(v) else md_cell(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  # typed as text, the default (OT1) encoding prints these as '¡', '¿' and '—'
                  "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}"}


def _tex(s: object) -> str:
    text = str(s)
    bold = text.startswith("**") and text.endswith("**") and len(text) > 4
    out = "".join(_LATEX_ESCAPES.get(ch, ch) for ch in (text[2:-2] if bold else text))
    return r"\textbf{" + out + "}" if bold else out


def to_latex(table: pd.DataFrame, caption: str | None = None) -> str:
    """A booktabs tabular (wrapped in a table environment when a caption is given)."""
    cols = [str(c) for c in table.columns]
    body = [r"\begin{tabular}{" + "l" * len(cols) + "}", r"\toprule", " & ".join(_tex(c) for c in cols) + r" \\",
            r"\midrule"]
    for row in table.itertuples(index=False):
        body.append(" & ".join("" if pd.isna(v) else _tex(v) for v in row) + r" \\")
    body += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        body = [r"\begin{table}[t]", r"\centering", *body, r"\caption{" + _tex(caption) + "}", r"\end{table}"]
    return "\n".join(body) + "\n"


def write_tables(summary: pd.DataFrame, by: list[str], out_base: Path, digits: int = 2, labels: dict | None = None,
                 caption: str | None = None, best=None) -> list[Path]:
    """Write `out_base`.md/.tex (formatted, wide) and .csv (tidy numbers); return the paths."""
    tidy = summary.assign(best=best) if best is not None else summary
    return write_frames(wide(summary, by, digits, labels, best), tidy, out_base, caption)


def write_frames(table: pd.DataFrame, tidy: pd.DataFrame, out_base: Path, caption: str | None = None) -> list[Path]:
    """Write a formatted wide `table` as `out_base`.md/.tex and its `tidy` numbers as .csv."""
    out_base.parent.mkdir(parents=True, exist_ok=True)
    md, tex, csv = out_base.with_suffix(".md"), out_base.with_suffix(".tex"), out_base.with_suffix(".csv")
    md.write_text(to_markdown(table))
    tex.write_text(to_latex(table, caption))
    tidy.to_csv(csv, index=False)
    return [md, tex, csv]


def interval_cell(value: float, lo: float, hi: float, digits: int = 2) -> str:
    """'value [lo, hi]', or '--' when missing."""
    return _fmt(value, lo, hi, digits)
