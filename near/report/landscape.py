"""Learnt-reward figures: the energy landscape of an NCSN checkpoint, or an AMP discriminator's
reward, over the 2-D maze.

The report does not load models itself: it receives scorers, ``{model: scorer(run_dir, level)
-> (score function, in_dim, sigma or None)}`` (the `near report` command passes the training
core's loaders: an ncsn run's energy at a noise level, one panel per ``sigma_levels`` entry; an AMP
run's discriminator style reward, one panel). Each maze point p is scored as the standing
transition (p, p, ...) -- both models' input is ``numObsSteps`` consecutive 2-D positions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from near.errors import NearError
from near.report.registry import figure_kind


def grid_points(extent: tuple[float, float, float, float], resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Mesh (X, Y) of `resolution` x `resolution` points over extent (x0, x1, y0, y1)."""
    x0, x1, y0, y1 = extent
    return np.meshgrid(np.linspace(x0, x1, resolution), np.linspace(y0, y1, resolution))


def landscape(score: Callable, in_dim: int, extent, resolution: int = 120) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, Y, Z): `score` of the standing transition at every grid point; in_dim must be a multiple of 2."""
    import torch

    if in_dim % 2:
        raise NearError(f"energy model takes {in_dim} features; a 2-D maze landscape needs a multiple of 2")
    X, Y = grid_points(extent, resolution)
    pts = torch.tensor(np.stack([X.ravel(), Y.ravel()], axis=1), dtype=torch.float32)
    paired = pts.repeat(1, in_dim // 2)
    with torch.no_grad():
        Z = score(paired).reshape(X.shape).detach().cpu().numpy()
    return X, Y, Z


def _panels(scorer: Callable, run_dir: Path, fig) -> list[dict]:
    """`scorer(run_dir, level)` -> (score function, in_dim, sigma or None); sigma None: one panel."""
    extent = tuple(float(v) for v in fig.extent)
    panels = []
    for level in ([None] if fig.model == "amp" else fig.sigma_levels):
        score, in_dim, sigma = scorer(run_dir, None if level is None else int(level))
        X, Y, Z = landscape(score, in_dim, extent, fig.resolution)
        if sigma is None:
            panels.append({"title": "AMP discriminator", "x": X, "y": Y, "z": Z, "label": "style reward"})
            break
        panels.append({"title": f"level {level} (sigma={sigma:.3g})", "x": X, "y": Y, "z": Z, "label": "energy"})
    return panels


@figure_kind("landscape")
def landscape_figure(data, fig, out) -> list[Path]:
    """For each of the first 4 selected runs: one panel per noise level of an ncsn run (``model:
    ncsn``), or the discriminator of an AMP run (``model: amp``), scored by ``out.scorers[model]``."""
    from near.report import figures
    from near.report.runs import select_runs

    scorer = out.scorers.get(fig.model)
    if scorer is None:
        out.warn(f"{out.where(fig)} skipped: no scorer for model {fig.model!r} was given to the report "
                 f"(have: {', '.join(out.scorers) or 'none'})")
        return []
    # ncsn jobs log few or no scalars, so select among all jobs of the table, not the plotted runs
    table = data.jobs.assign(run=data.jobs["job_id"]) if data.jobs is not None else data.runs
    runs = select_runs(table, fig.select, out.where(fig))
    if "run_dir" not in runs.columns or runs.empty:
        out.warn(f"{out.where(fig)} skipped: no selected run has a run_dir (is the job table there?)")
        return []
    written = []
    default_title = "AMP discriminator reward" if fig.model == "amp" else "NCSN energy landscape"
    for _, run in runs.head(4).iterrows():
        try:
            panels = _panels(scorer, Path(str(run["run_dir"])), fig)
        except Exception as err:  # a missing checkpoint must not stop the curves and tables
            out.warn(f"{out.where(fig)} skipped for run {run['run']}: {err}")
            continue
        slug = figures.slug
        name = f"{slug(fig.name)}_{slug(str(run.get('motion', run['run'])))}_{slug(str(run['run']))}"
        written += figures.heatmap_figure(panels, out.dir / name, fig.title or default_title, tuple(out.spec.formats))
        out.captions[name] = fig.caption or f"{fig.title or default_title} of run {run['run']}."
    return written
