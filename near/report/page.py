"""The report page ``EXP/figures/index.html``: figures, tables, job states, failed jobs with the
last lines of their logs, links to run dirs. One self-contained file (inline CSS, no network)
that refers to the figures next to it by relative paths, so it works over ``file://`` on a
cluster filesystem and when the folder is copied. `render` is pure; `tail` and `write` do the I/O.
"""

from __future__ import annotations

import html
import os
from urllib.parse import quote
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1400px; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
figure { display: inline-block; margin: .5em; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #ddd; background: #fff; }
figcaption { font-size: .85em; color: #555; }
table { border-collapse: collapse; margin: .6em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; }
th { background: #f2f2f2; }
.state-done { color: #2a7; } .state-failed, .state-blocked { color: #c33; } .warn { color: #b60; }
pre { background: #f7f7f7; padding: .5em; overflow-x: auto; font-size: .8em; max-height: 18em; }
.filters label { margin-right: 1em; }
"""
# Hides run rows whose data-* attributes do not match every chosen filter value.
FILTER_JS = """
function nearFilter() {
  const chosen = [...document.querySelectorAll('.filters select')].filter(s => s.value);
  document.querySelectorAll('#runs-table tbody tr').forEach(tr => {
    tr.hidden = !chosen.every(s => tr.dataset[s.name] === s.value);
  });
}
"""

@dataclass
class PageData:
    """Everything the page shows; paths are absolute (made relative to the page when rendered)."""

    title: str
    figures: list[Path]
    tables: list[tuple[str, str, pd.DataFrame]]  # (name, caption, formatted wide table)
    counts: dict[str, int] = field(default_factory=dict)
    failed: list[dict] = field(default_factory=list)  # job_id, state, reason, run_dir, log (text)
    runs: list[dict] = field(default_factory=list)  # one row per run: run, run_dir, stage, state, metadata
    warnings: list[str] = field(default_factory=list)
    captions: dict[str, str] = field(default_factory=dict)  # figure file stem -> caption
    left_out: list[tuple[str, str]] = field(default_factory=list)  # (run, reason)
    filters: list[str] = field(default_factory=list)  # metadata columns the runs can be filtered by


def tail(path: Path, lines: int = 20, max_bytes: int = 64_000) -> str:
    """The last `lines` lines of a text file ('' when absent), reading at most `max_bytes`."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def _link(target: str | Path, page_dir: Path) -> str:
    """A relative link that always starts with ./ or ../, so no part of a name (``javascript:``, a
    drive letter, ``//host``) can be read as a scheme or host; escaped for an attribute."""
    rel = Path(os.path.relpath(target, page_dir)).as_posix()
    if not rel.startswith("../"):
        rel = "./" + rel
    return html.escape(quote(rel, safe="/._-~+,=@"), quote=True)


def _table_html(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>"
                   for row in frame.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _cell(v) -> str:
    """A table cell: escaped text; a ``**best**`` value in bold."""
    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return ""
    text = str(v)
    if text.startswith("**") and text.endswith("**") and len(text) > 4:
        return f"<b>{html.escape(text[2:-2])}</b>"
    return html.escape(text)


def _runs_html(data: PageData, page_dir: Path) -> str:
    cols = ["run", "stage", "state", *[c for c in data.filters if c not in ("run", "stage", "state")]]
    cols = [c for c in cols if any(r.get(c) is not None for r in data.runs)]
    out = []
    if data.filters:
        selects = []
        for f in data.filters:
            values = sorted({str(r[f]) for r in data.runs if r.get(f) is not None})
            if len(values) < 2:
                continue
            opts = "".join(f"<option value='{html.escape(v, quote=True)}'>{html.escape(v)}</option>" for v in values)
            selects.append(f"<label>{html.escape(f)} <select name='{html.escape(_data_key(f), quote=True)}' "
                           f"onchange='nearFilter()'><option value=''>all</option>{opts}</select></label>")
        if selects:
            out.append(f"<p class='filters'>{''.join(selects)}</p>")
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    rows = []
    for r in data.runs:
        attrs = "".join(f" data-{html.escape(_attr(f))}='{html.escape(str(r[f]), quote=True)}'"
                        for f in data.filters if r.get(f) is not None)
        cells = []
        for c in cols:
            v = r.get(c)
            text = "" if v is None else html.escape(str(v))
            if c == "run" and r.get("run_dir"):
                text = f"<a href='{_link(r['run_dir'], page_dir)}'>{text}</a>"
            cells.append(f"<td>{text}</td>")
        rows.append(f"<tr{attrs}>{''.join(cells)}</tr>")
    out.append(f"<table id='runs-table'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")
    return "".join(out)


def _attr(name: str) -> str:
    """A data-* attribute name for a metadata column (lower case letters, digits and dashes)."""
    return "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-") or "x"


def _data_key(name: str) -> str:
    """The dataset key the browser derives from `_attr(name)` (dashes + letter -> upper case)."""
    parts = _attr(name).split("-")
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


def render(data: PageData, page_dir: Path) -> str:
    """The page's HTML for a page written into `page_dir`."""
    esc = html.escape
    out = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(data.title)}</title>",
           f"<style>{CSS}</style><script>{FILTER_JS}</script></head><body>",
           f"<h1>{esc(data.title)}</h1><p>generated {esc(time.strftime('%Y-%m-%d %H:%M:%S %Z'))} by "
           "<code>near report</code></p>"]
    if data.counts:
        cells = "".join(f"<td class='state-{esc(s)}'>{esc(s)} {n}</td>" for s, n in data.counts.items() if n)
        out.append(f"<h2 id='jobs'>Jobs</h2><table><tr>{cells}</tr></table>")
    if data.warnings:
        items = "".join(f"<li>{esc(w)}</li>" for w in data.warnings)
        out.append(f"<h2 id='warnings'>Warnings</h2><ul class='warn'>{items}</ul>")
    if data.figures:
        out.append("<h2 id='figures'>Figures</h2>")
        for png in data.figures:
            pdf = png.with_suffix(".pdf")
            extra = f" · <a href='{_link(pdf, page_dir)}'>pdf</a>" if pdf.is_file() else ""
            caption = data.captions.get(png.stem, png.stem)
            out.append(f"<figure><img src='{_link(png, page_dir)}' alt='{esc(caption)}'>"
                       f"<figcaption>{esc(caption)}{extra}</figcaption></figure>")
    for name, caption, frame in data.tables:
        out.append(f"<h2 id='table-{esc(name)}'>Table: {esc(name)}</h2><p>{esc(caption)}</p>{_table_html(frame)}")
    if data.failed:
        out.append("<h2 id='failed'>Failed jobs</h2>")
        for job in data.failed:
            link = f" · <a href='{_link(job['run_dir'], page_dir)}'>run dir</a>" if job.get("run_dir") else ""
            out.append(f"<h3>{esc(job['job_id'])} <span class='state-{esc(job['state'])}'>{esc(job['state'])}"
                       f"</span>{link}</h3><p>{esc(job.get('reason') or 'no reason recorded')}</p>")
            if job.get("log"):
                out.append(f"<pre>{esc(job['log'])}</pre>")
    if data.left_out:
        items = "".join(f"<tr><td>{esc(r)}</td><td>{esc(why)}</td></tr>" for r, why in data.left_out)
        out.append(f"<h2 id='left-out'>Left out ({len(data.left_out)})</h2><table><thead><tr><th>run</th>"
                   f"<th>why</th></tr></thead><tbody>{items}</tbody></table>")
    if data.runs:
        out.append(f"<h2 id='runs'>Runs ({len(data.runs)})</h2>{_runs_html(data, page_dir)}")
    out.append("</body></html>")
    return "\n".join(out)


def failed_jobs(jobs: pd.DataFrame | None, log_lines: int = 20) -> list[dict]:
    """Failed, blocked and cancelled jobs of a job frame, with the last lines of their logs."""
    if jobs is None or "state" not in jobs.columns:
        return []
    out = []
    for _, j in jobs[jobs["state"].isin(["failed", "blocked", "cancelled"])].iterrows():
        run_dir = str(j["run_dir"]) if isinstance(j.get("run_dir"), str) else None
        log = ""
        if run_dir:
            parts = [(n, tail(Path(run_dir) / n, log_lines)) for n in ("stderr.log", "stdout.log")]
            log = "\n".join(f"== {n} (last lines)\n{t}" for n, t in parts if t)
        reason = j.get("reason")
        out.append({"job_id": str(j["job_id"]), "state": str(j["state"]),
                    "reason": None if pd.isna(reason) else str(reason),
                    "run_dir": run_dir if run_dir and os.path.isdir(run_dir) else None, "log": log})
    return out


def run_rows(data, jobs: pd.DataFrame | None) -> list[dict]:
    """One row per run for the page: every job of the table (all stages) when there is one, else the
    runs read; with run dir, stage, state and the grouping fields."""
    fields = list(data.fields)
    if jobs is not None and len(jobs):
        src = jobs.assign(run=jobs["job_id"])
    else:
        src = data.runs.assign(run=data.runs.index)
    rows = []
    for _, j in src.iterrows():
        row = {"run": str(j["run"])}
        for c in ["stage", "state", *fields]:
            v = j.get(c)
            row[c] = None if v is None or (not isinstance(v, str) and pd.isna(v)) else v
        d = j.get("run_dir")
        row["run_dir"] = d if isinstance(d, str) and os.path.isdir(d) else None
        rows.append(row)
    return rows


def write(data: PageData, path: Path) -> Path:
    """Write the page (temp file, then rename: a reader never sees half a page)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(render(data, path.parent), encoding="utf-8")
    os.replace(tmp, path)
    return path
