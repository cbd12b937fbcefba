"""Draw a learning check's curves: episode length and training-episode DTW pose error against frames.

    python benchmarks/plot_learning_curves.py CURVES.csv [CURVES.csv ...] --out FIGURE.png [--title T]

Reads the ``curves.csv`` files ``learning_check_humanoid_gpu.py`` writes (columns run, frames,
episode_length, mean_dtw_pose_error; one row per logged epoch) and draws one line per run in two
panels. A run named in several files is drawn once, from the last file naming it.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

COLUMNS = ("run", "frames", "episode_length", "mean_dtw_pose_error")


def load_curves(paths: list[str]) -> pd.DataFrame:
    """The rows of every file; a run found in a later file replaces the earlier one's rows."""
    frames = []
    for path in paths:
        df = pd.read_csv(path)
        missing = [c for c in COLUMNS if c not in df.columns]
        if missing:
            raise SystemExit(f"near: error: {path}: missing column(s) {', '.join(missing)} (expected {', '.join(COLUMNS)})")
        frames = [f[~f["run"].isin(set(df["run"]))] for f in frames] + [df]
    curves = pd.concat(frames, ignore_index=True)
    if curves.empty:
        raise SystemExit(f"near: error: no rows in {', '.join(paths)}")
    return curves.sort_values(["run", "frames"])


def plot(curves: pd.DataFrame, out: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(1, 2, figsize=(12.5, 4), constrained_layout=True)
    data = curves.assign(mframes=curves["frames"] / 1e6)
    for ax, column, label in ((axes[0], "episode_length", "episode length (control steps; 300 = full)"),
                              (axes[1], "mean_dtw_pose_error", "DTW pose error of training episodes (m)")):
        sns.lineplot(data=data, x="mframes", y=column, hue="run", ax=ax, linewidth=1.6)
        ax.set_xlabel("frames (millions)")
        ax.set_ylabel(label)
    # one legend beside both panels: inside either it would hide the ends of the curves
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes:
        ax.get_legend().remove()
    fig.legend(handles, labels, loc="outside right center")
    fig.suptitle(title)
    fig.savefig(out, dpi=120)
    print(f"wrote {out} ({curves['run'].nunique()} runs, {len(curves)} points)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("curves", nargs="+", help="curves.csv files of learning checks")
    ap.add_argument("--out", required=True, help="the figure (.png or .pdf)")
    ap.add_argument("--title", default="Humanoid learning check")
    args = ap.parse_args(argv)
    try:
        curves = load_curves(args.curves)
    except (OSError, pd.errors.ParserError) as err:
        raise SystemExit(f"near: error: {err}") from err
    plot(curves, args.out, args.title)
    return 0


if __name__ == "__main__":
    sys.exit(main())
