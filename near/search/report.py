"""What a search sweep shows: trial counts in ``near sweep status``; in ``near report`` the best
trials (Markdown and CSV), the metric over trials, parallel coordinates and parameter importance."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from near.search import study as studymod

TOP = 10
META = ("study", "trial", "state", "value", "job_id", "pruned_at", "direction")  # the other columns: parameters


def trials_frame(exp_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per trial of every study: study, number, state, value, job_id, params (one column each)."""
    rows = []
    for st in studymod.load_studies(exp_dir):
        for t in st.get_trials(deepcopy=False):
            last = max(t.intermediate_values, default=None)
            rows.append({"study": st.study_name, "trial": t.number, "state": t.state.name.lower(),
                         "value": t.value, "job_id": t.user_attrs.get(studymod.JOB_ATTR),
                         "pruned_at": last if t.state.name == "PRUNED" else None,
                         "direction": st.direction.name.lower(), **t.params})
    return pd.DataFrame(rows)


def _params(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in META]


def best_trials(frame: pd.DataFrame, top: int = TOP) -> pd.DataFrame:
    """The ``top`` complete trials of each study, best first (by the study's direction)."""
    done = frame[frame["state"] == "complete"]
    parts = []
    for _, g in done.groupby("study", sort=True):
        parts.append(g.sort_values("value", ascending=g["direction"].iloc[0] == "minimize").head(top))
    return pd.concat(parts) if parts else done


def status_lines(exp_dir: Path) -> list[str]:
    """Lines for ``near sweep status``: per study, trials by state and the best one so far."""
    if not studymod.has_search(exp_dir):
        return []
    frame = trials_frame(exp_dir)
    if frame.empty:
        return ["\nsearch: no trials yet"]
    out = ["\nsearch trials:"]
    best = best_trials(frame, 1).set_index("study")
    params = _params(frame)
    for name, g in frame.groupby("study", sort=True):
        counts = g["state"].value_counts()
        line = f"  {name}: {len(g)} trials  " + "  ".join(f"{s} {counts[s]}" for s in
                                                          ("complete", "running", "pruned", "fail") if s in counts)
        if name in best.index:
            b = best.loc[name]
            line += f"; best #{b['trial']} value {b['value']:.6g} (" + " ".join(
                f"{p}={b[p]}" for p in params if pd.notna(b[p])) + ")"
        out.append(line)
    return out


def write_report(exp_dir: str | os.PathLike, out: str | os.PathLike, formats=("png",)) -> list[Path]:
    """The search's tables and figures under ``out``; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frame = trials_frame(exp_dir)
    if frame.empty:
        return []
    written = []
    best = best_trials(frame).drop(columns=["direction"])
    best.to_csv(out / "search_best.csv", index=False)
    (out / "search_best.md").write_text(_markdown(best))
    written += [out / "search_best.csv", out / "search_best.md"]
    params = _params(frame)
    studies = sorted(frame["study"].unique())
    figs = {"search_trials": _over_trials(plt, frame, studies),
            "search_parallel": _parallel(plt, frame, studies, params),
            "search_importance": _importance(plt, exp_dir, studies)}
    for name, fig in figs.items():
        if fig is None:
            continue
        for fmt in formats:
            fig.savefig(out / f"{name}.{fmt}", dpi=120, bbox_inches="tight")
            written.append(out / f"{name}.{fmt}")
        plt.close(fig)
    return written


def _markdown(frame: pd.DataFrame) -> str:
    """The trials as the report's Markdown table, floats to 6 significant digits."""
    from near.report.tables import to_markdown

    return to_markdown(frame.apply(lambda col: col.map(lambda v: f"{v:.6g}" if isinstance(v, float) and not pd.isna(v)
                                                       else v)))


def _grid(plt, n: int, w: float = 5.0, h: float = 3.6):
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(w * cols, h * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _over_trials(plt, frame: pd.DataFrame, studies: list[str]):
    """Each trial's value by trial number (pruned ones at their last reported value) and the best so far."""
    fig, axes = _grid(plt, len(studies))
    for ax, name in zip(axes, studies):
        g = frame[frame["study"] == name].sort_values("trial")
        done = g[g["state"] == "complete"]
        ax.scatter(done["trial"], done["value"], s=18, color="C0", label="complete", zorder=3)
        if len(done):
            best = done["value"].cummin() if g["direction"].iloc[0] == "minimize" else done["value"].cummax()
            ax.step(done["trial"], best, where="post", color="C3", label="best so far")
        pruned = g[g["state"] == "pruned"]
        if len(pruned):
            ax.scatter(pruned["trial"], [0] * len(pruned), marker="x", color="0.5", s=18,
                       label=f"pruned ({len(pruned)})", transform=ax.get_xaxis_transform(), clip_on=False)
        ax.set_xlabel("trial")
        ax.set_ylabel("metric")
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle("metric over trials")
    fig.tight_layout()
    return fig


def _parallel(plt, frame: pd.DataFrame, studies: list[str], params: list[str]):
    """Parallel coordinates of complete trials: one line per trial, colour = metric (darker = better)."""
    if not params:
        return None
    fig, axes = _grid(plt, len(studies), w=2 + 1.4 * (len(params) + 1))
    for ax, name in zip(axes, studies):
        g = frame[(frame["study"] == name) & (frame["state"] == "complete")]
        if g.empty:
            ax.set_title(f"{name}: no complete trial", fontsize=9)
            continue
        cols = params + ["value"]
        scaled = np.column_stack([_unit(g[c]) for c in cols])
        v = g["value"].to_numpy(float)
        good = (v.max() - v) if g["direction"].iloc[0] == "minimize" else (v - v.min())
        shade = good / (np.ptp(v) or 1.0)
        cmap = plt.get_cmap("viridis")
        for row, c in sorted(zip(scaled, shade), key=lambda x: x[1]):
            ax.plot(range(len(cols)), row, color=cmap(c), alpha=0.8, lw=1.2)
        ranges = [_range_text(g[c]) for c in cols]
        ax.set_xticks(range(len(cols)), [f"{c}\n{lo} .. {hi}" for c, (lo, hi) in zip(cols, ranges)], fontsize=8)
        for k in range(len(cols)):
            ax.axvline(k, color="0.8", lw=0.8, zorder=0)
        ax.set_yticks([0, 1], ["low", "high"], fontsize=7)
        ax.set_title(name, fontsize=9)
    fig.suptitle("parallel coordinates (yellow = best)")
    fig.tight_layout()
    return fig


def _unit(col: pd.Series) -> np.ndarray:
    """A column mapped to [0, 1] (categories by their sorted order)."""
    if not pd.api.types.is_numeric_dtype(col):
        cats = sorted(col.astype(str).unique())
        x = col.astype(str).map({c: i for i, c in enumerate(cats)}).to_numpy(float)
    else:
        x = col.to_numpy(float)
    span = np.ptp(x)
    return (x - x.min()) / span if span else np.full(len(x), 0.5)


def _range_text(col: pd.Series) -> tuple[str, str]:
    if not pd.api.types.is_numeric_dtype(col):
        cats = sorted(col.astype(str).unique())
        return cats[0], cats[-1]
    return f"{col.min():.3g}", f"{col.max():.3g}"


def _importance(plt, exp_dir, studies: list[str]):
    """Optuna's parameter importance of each study (needs a few complete trials)."""
    import optuna

    found = {}
    for st in studymod.load_studies(exp_dir):
        done = [t for t in st.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
        if len(done) >= 4 and len(done[0].params) >= 1:
            try:
                found[st.study_name] = optuna.importance.get_param_importances(st)
            except (RuntimeError, ValueError):
                continue
    if not found:
        return None
    names = [s for s in studies if s in found]
    fig, axes = _grid(plt, len(names), w=4.5, h=0.6 + 0.45 * max(len(v) for v in found.values()))
    for ax, name in zip(axes, names):
        imp = found[name]
        keys = list(imp)[::-1]
        ax.barh(keys, [imp[k] for k in keys], color="C2")
        ax.set_xlim(0, 1)
        ax.set_xlabel("importance")
        ax.set_title(name, fontsize=9)
    fig.suptitle("parameter importance")
    fig.tight_layout()
    return fig
