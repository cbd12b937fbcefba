"""Seaborn/matplotlib figures from aggregated curves (Agg backend; PDF and PNG).

Colours are a pure function of the label (`color_for`), so an algorithm has the same colour in
every figure of every report, whichever subset of algorithms a figure shows.
"""

from __future__ import annotations

import hashlib
import os
import re
import textwrap
from pathlib import Path

import numpy as np

# Fixed colours for the algorithms this project ships; anything else is hashed into EXTRA.
FIXED_COLOURS = {
    "NEAR": "#e6194B",
    "AMP": "#4363d8",
    "Track": "#3cb44b",
    "PPO": "#f58231",
    "DMP": "#911eb4",
    "CEM": "#469990",
}
EXTRA = ["#42d4f4", "#f032e6", "#9A6324", "#808000", "#800000", "#000075", "#a9a9a9", "#bcf60c", "#fabebe"]
EXPERT_COLOUR = "#000000"


def slug(text: str) -> str:
    """File-name-safe form of a tag or label."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def color_for(name: str, overrides: dict | None = None) -> str:
    """Colour of a curve label: spec override, else fixed table, else a stable hash of the name."""
    if overrides and name in overrides:
        return overrides[name]
    if name in FIXED_COLOURS:
        return FIXED_COLOURS[name]
    digest = int(hashlib.sha1(name.encode()).hexdigest(), 16)
    return EXTRA[digest % len(EXTRA)]


# seaborn's "colorblind" palette, for variants in order
COLORBLIND = ["#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc", "#ca9161", "#fbafe4", "#949494", "#ece133",
              "#56b4e9"]
# seaborn's whitegrid "paper" theme (font scale 1.1) as plain rc settings: importing seaborn costs more
# than drawing several figures. A fixed title height (axes.titley) spares matplotlib measuring every
# tick label to place each title, a third of a figure's drawing time.
STYLE = {
    "axes.axisbelow": True, "axes.edgecolor": ".8", "axes.grid": True, "axes.labelcolor": ".15",
    "axes.labelsize": 10.56, "axes.linewidth": 1.0, "axes.titlesize": 10.56, "axes.titley": 1.0,
    "axes.titlepad": 5.0, "axes.facecolor": "white", "font.size": 10.56, "grid.color": ".8",
    "legend.fontsize": 9.68, "lines.linewidth": 1.2, "lines.solid_capstyle": "round", "patch.edgecolor": "w",
    "patch.linewidth": 0.8, "text.color": ".15", "xtick.bottom": False, "xtick.color": ".15",
    "xtick.labelsize": 9.68, "ytick.color": ".15", "ytick.labelsize": 9.68, "ytick.left": False,
    "font.sans-serif": ["Arial", "DejaVu Sans", "Liberation Sans", "Bitstream Vera Sans", "sans-serif"],
    # every text drawn is a name or a number from the data: '$' in a run or tag name is a dollar sign,
    # never matplotlib's math (which garbles the name or fails to parse it)
    "text.parse_math": False,
}


def distinct_colours(names: list[str], overrides: dict | None = None) -> dict[str, str]:
    """`color_for` each name, except that a name whose colour an earlier name of the same figure
    already has gets the next unused one (hashed colours collide once there are a few names), or
    the least used one when none is left."""
    out: dict[str, str] = {}
    spare = [c for c in EXTRA + COLORBLIND if c not in FIXED_COLOURS.values()]
    for name in names:
        colour = color_for(name, overrides)
        if colour in out.values() and not (overrides and name in overrides):
            used = list(out.values())
            # once every colour is taken, the least used one: curves sharing a colour then differ by
            # line style (`line_styles`), which has a few styles per colour, not one per curve
            colour = min(spare, key=lambda c: (used.count(c), spare.index(c)))
        out[name] = colour
    return out


def ordered_colours(names: list[str]) -> dict[str, str]:
    """Distinct colours for ablation variants: the colorblind palette in the variants' order."""
    return {n: COLORBLIND[i % len(COLORBLIND)] for i, n in enumerate(names)}


_STYLED = False


def _setup():
    global _STYLED
    import matplotlib

    if not _STYLED or matplotlib.get_backend().lower() != "agg":
        matplotlib.use("Agg", force=True)
        matplotlib.rcParams.update(STYLE)
        _STYLED = True


def _spread(values: list[float], min_gap: float) -> list[float]:
    """Move label positions apart (keeping their order) so no two are closer than `min_gap`."""
    order = np.argsort(values)
    pos = np.array(values, dtype=float)[order]
    for i in range(1, len(pos)):
        pos[i] = max(pos[i], pos[i - 1] + min_gap)
    shift = (pos.mean() - np.array(values)[order].mean()) if len(pos) else 0.0
    pos -= shift
    out = np.empty_like(pos)
    out[order] = pos
    return out.tolist()


def legend_names(names: list[str], min_common: int = 12) -> tuple[list[str], str | None]:
    """Legend entries abbreviated with a key: a prefix of at least `min_common` characters that every
    curve name shares becomes '…' in the entries and is spelled out once (the key)."""
    curves = [n for n in names if n != "Expert"]
    if len(curves) < 2:
        return names, None
    prefix = os.path.commonprefix(curves)
    cut = max(prefix.rfind(c) for c in "_-/ .") + 1 if prefix else 0  # at a word boundary
    if cut < min_common:
        return names, None
    return [n if n == "Expert" else "…" + n[cut:] for n in names], f"… = {prefix[:cut]}"


def _end_labels(ax, labels: list[tuple[str, float, float | None, str]]) -> None:
    """Values at the right of a panel, stacked without overlap: (text, y, x of the curve's end or None
    for a reference line, colour). A curve ending at the right edge gets a short leader line; one
    that ends earlier gets a dot at its end instead of a line across the panel. Labels that do not
    fit the panel's height are dropped, the outermost first."""
    x0, x1 = ax.get_xlim()
    span = x1 - x0
    right = max([x for _, _, x, _ in labels if x is not None] + [x0 + 0.84 * span])
    room = 0.3 if any(x is None for _, _, x, _ in labels) else 0.2
    ax.set_xlim(x0, right + room * span)  # room for the labels inside the panel
    lo, hi = ax.get_ylim()
    gap = (0.1 if room > 0.2 else 0.075) * (hi - lo)
    fit = max(1, int((hi - lo) / gap) - 1)
    if len(labels) > fit:  # keep the ones nearest the middle of the panel
        mid = (lo + hi) / 2
        labels = sorted(labels, key=lambda t: abs(t[1] - mid))[:fit]
    ys = np.array(_spread([t[1] for t in labels], gap))
    ys += max(0.0, lo + gap / 2 - ys.min()) - max(0.0, ys.max() - (hi - gap / 2))
    for (text, y, x, colour), ytext in zip(labels, ys):
        tx = right + 0.03 * span
        if x is not None and right - x > 0.03 * span:
            ax.plot([x], [y], "o", color=colour, ms=3.5, zorder=6)
            ax.annotate(text, xy=(tx, ytext), color=colour, fontsize=8, va="center", ha="left")
        elif x is not None:
            ax.annotate(text, xy=(x, y), xytext=(tx, ytext), textcoords="data", color=colour, fontsize=8,
                        va="center", ha="left", arrowprops=dict(arrowstyle="-", color=colour, lw=0.6, alpha=0.7))
        else:
            # above the reference line (zorder 5), whose dashes would otherwise run through its value
            ax.annotate(text, xy=(tx, ytext), color=colour, fontsize=7.5, va="center", ha="left", linespacing=0.9,
                        bbox=dict(boxstyle="square,pad=0.15", fc="white", ec="none"), zorder=7)


# for curves whose colour an earlier curve of the figure already has (past the palette's size); the
# expert's line is dashed too, but black, a colour no curve has
LINE_STYLES = ["-", "--", ":", "-."]


def line_styles(labels: list[str], colours: dict[str, str]) -> dict[str, object]:
    """A line style per curve so that no two curves of a figure look alike: solid for the first curve
    of each colour, the next style for each further curve of that colour."""
    seen: dict[str, int] = {}
    out = {}
    for label in labels:
        k = seen.get(colours[label], 0)
        seen[colours[label]] = k + 1
        out[label] = LINE_STYLES[k % len(LINE_STYLES)]
    return out


def curves_figure(
    panels: list[dict],
    out_base: Path,
    title: str | None,
    x_label: str,
    y_label: str,
    colours: dict[str, str],
    annotate_end: bool = True,
    col_wrap: int = 4,
    size: tuple[float, float] = (4.2, 3.2),
    sharey: bool = False,
    formats: tuple[str, ...] = ("pdf", "png"),
    ci_level: float = 0.95,
    band_label: str | None = None,
    legend: bool = True,
) -> list[Path]:
    """One figure: a panel per facet value, a line + band per curve, optional expert line, and
    (``legend``) a legend under the panels.

    `band_label` says what the shaded band is (default: the bootstrap CI at `ci_level`).

    `panels`: list of {"title": str, "curves": {label: Curve}, "expert": float | None}.
    Returns the files written.
    """
    _setup()
    import matplotlib.pyplot as plt

    n = max(1, len(panels))
    ncols = min(n, col_wrap)
    nrows = int(np.ceil(n / ncols))
    # Fixed margins in inches: no layout engine, so each savefig is exactly one draw (constrained
    # or tight layouts re-measure every text several times, the bulk of a figure's cost). The legend
    # (entries abbreviated with a key, wrapped) and the title (wrapped to the width) size the margins.
    width = size[0] * ncols
    order = list(dict.fromkeys(label for p in panels for label in p["curves"]))
    order += ["Expert"] if any(p.get("expert") is not None for p in panels) else []
    names, key = legend_names([str(n) for n in order])
    names = [textwrap.fill(n, 32) for n in names]
    per_col = max([len(line) for n in names for line in n.splitlines()] + [6]) * 0.085 + 0.6  # inches
    legend_cols = max(1, min(len(names), int(width // per_col)))
    legend_lines = max((sum(n.count("\n") + 1 for n in names[c::legend_cols]) for c in range(legend_cols)),
                       default=0) + (key is not None) if legend else 0
    if title:
        band_label = band_label or f"{int(round(ci_level * 100))}% bootstrap CI"
        title = textwrap.fill(f"{title}  (shaded: {band_label})", max(30, int(width * 11)))
    title_lines = title.count("\n") + 1 if title else 0
    left, right, gap_w, gap_h = 0.85, 0.15, 0.75, 0.85
    top = 0.4 + 0.25 * title_lines
    bottom = 0.8 + 0.2 * legend_lines
    height = size[1] * nrows + bottom + top - 0.9
    fig, axes = _canvas(nrows, ncols, width, height, sharey, (left, right, top, bottom, gap_w, gap_h))
    styles = line_styles([label for label in order if label != "Expert"], colours)
    handles: dict[str, object] = {}
    for k, panel in enumerate(panels):
        ax = axes[k // ncols][k % ncols]
        ends = []
        for label, curve in panel["curves"].items():
            colour = colours[label]
            valid = ~np.isnan(curve.center)
            if not valid.any():
                continue
            (line,) = ax.plot(curve.grid[valid], curve.center[valid], color=colour, lw=1.6, label=label,
                              ls=styles[label])
            band = valid & ~np.isnan(curve.low) & ~np.isnan(curve.high)
            if (curve.high[band] > curve.low[band]).any():  # a group of one run has no band: nothing to fill
                ax.fill_between(curve.grid[band], curve.low[band], curve.high[band], color=colour, alpha=0.2, lw=0)
            handles.setdefault(label, line)
            last = np.flatnonzero(valid)[-1]
            ends.append((float(curve.center[last]), float(curve.grid[last]), colour))
        expert = panel.get("expert")
        if expert is not None:
            line = ax.axhline(expert, color=EXPERT_COLOUR, ls="--", lw=1.2, label="Expert", zorder=5)
            handles.setdefault("Expert", line)
            lo, hi = ax.get_ylim()  # keep the expert line off the frame's edge, where the spine hides it
            pad = 0.12 * (hi - lo)  # and room for its value label beside it
            ax.set_ylim(min(lo, expert - pad), max(hi, expert + pad))
        ax.set_title(panel["title"])
        # one label per row and per column: the same words on every panel only cost drawing time
        ax.set_xlabel(x_label if k + ncols >= len(panels) else "")
        ax.set_ylabel(y_label if k % ncols == 0 else "")
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
        labels = [(f"{y:.3g}", y, x, c) for y, x, c in ends] if annotate_end else []
        if expert is not None:
            labels.append((f"expert\n{expert:.3g}", expert, None, EXPERT_COLOUR))
        if labels:
            _end_labels(ax, labels)
    for k in range(len(panels), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    if handles and legend:
        shown = [names[order.index(h)] for h in handles]
        fig.legend(list(handles.values()), shown, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncol=legend_cols,
                   frameon=False, fontsize=9, title=key, title_fontsize=8)
    fig.suptitle(title or "", fontsize=11, y=1 - 0.12 / height, va="top")
    return _save(fig, out_base, formats, close=False)


# Curve figures of one layout share a Figure and its axes: emptied and drawn again, they skip building
# axes, spines and tick machinery each time (a sixth of a figure's cost).
_CANVASES: dict[tuple, tuple] = {}


def _canvas(nrows: int, ncols: int, width: float, height: float, sharey: bool, margins: tuple):
    """An empty (figure, axes grid) of this layout: the one made for it before, cleared, or a new one."""
    import matplotlib.pyplot as plt

    key = (nrows, ncols, round(width, 3), round(height, 3), sharey, margins)
    if key in _CANVASES:
        fig, axes = _CANVASES[key]
        for ax in axes.ravel():
            for art in [*ax.lines, *ax.collections, *ax.texts, *ax.patches]:
                art.remove()
            ax.set_visible(True)
            ax.set_title("")
            ax.set_xlabel("")
            ax.set_ylabel("")
            ax.relim()
            ax.autoscale(enable=True)
        for legend in list(fig.legends):
            legend.remove()
        return fig, axes
    if len(_CANVASES) >= 8:  # a report has few layouts; keep the memory of the rest bounded
        old, _ = _CANVASES.pop(next(iter(_CANVASES)))
        plt.close(old)
    left, right, top, bottom, gap_w, gap_h = margins
    fig = plt.figure(figsize=(width, height))
    axes = np.atleast_2d(fig.subplots(nrows, ncols, squeeze=False, sharey=sharey))
    panel_w = (width - left - right - gap_w * (ncols - 1)) / ncols
    panel_h = (height - top - bottom - gap_h * (nrows - 1)) / nrows
    fig.subplots_adjust(left=left / width, right=1 - right / width, top=1 - top / height, bottom=bottom / height,
                        wspace=gap_w / panel_w, hspace=gap_h / panel_h)
    _CANVASES[key] = (fig, axes)
    return fig, axes


def _save(fig, out_base: Path, formats, close: bool = True) -> list[Path]:
    import matplotlib.pyplot as plt

    out_base.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        path = out_base.with_suffix(f".{fmt}")
        if fmt == "png":  # zlib level 1: a fraction of the encoding time for somewhat larger files
            fig.savefig(path, dpi=100, pil_kwargs={"compress_level": 1})
        else:
            fig.savefig(path)
        written.append(path)
    if close:
        plt.close(fig)
    return written


def heatmap_figure(
    panels: list[dict], out_base: Path, title: str | None, formats=("pdf", "png"), walls=None,
) -> list[Path]:
    """Learnt-reward landscapes: one heatmap per panel {"title", "x", "y", "z", "label"} over the 2-D maze.

    `walls`: optional list of (x0, y0, x1, y1) rectangles drawn on top (the maze's obstacles).
    """
    _setup()
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    n = max(1, len(panels))
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.3), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        mesh = ax.pcolormesh(panel["x"], panel["y"], panel["z"], shading="auto", cmap="viridis")
        fig.colorbar(mesh, ax=ax, fraction=0.046, pad=0.04, label=panel.get("label", ""))
        for (x0, y0, x1, y1) in walls or []:
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, facecolor="white", edgecolor="black", lw=0.5))
        if panel.get("demo") is not None:
            demo = np.asarray(panel["demo"])
            ax.plot(demo[:, 0], demo[:, 1], ".", color="white", ms=1.5, alpha=0.6)
        ax.set_title(panel["title"])
        ax.set_aspect("equal")
        ax.grid(False)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, out_base, formats)
