"""Learnt-reward figures: the energy landscape of an NCSN checkpoint, or an AMP discriminator's
reward, over the 2-D maze.

The training core's loaders are used as they are: ``near.training.ncsn.reward.EnergyFunction``
(ncsn run: checkpoint + running-mean-std normaliser -> energy of paired observations at a noise
level, one panel per ``sigma_levels`` entry) and ``near.training.algos.amp.load_discriminator``
(AMP rl run: ``nn/checkpoint.pth`` -> style reward of paired observations; one panel, noise levels
do not apply). Each maze point p is scored as the standing transition (p, p, ...) -- both models'
input is ``numObsSteps`` consecutive 2-D positions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from near.errors import NearError


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


def ncsn_scorer(run_dir: Path, level: int):
    """Scorer of the NCSN checkpoint in `run_dir/nn/` at noise level `level` (negative: from the end)."""
    from near.training.ncsn.reward import EnergyFunction
    from near.training.ncsn.trainer import load_energy_model

    ckpt, rms = Path(run_dir) / "nn" / "checkpoint.pth", Path(run_dir) / "nn" / "running_mean_std.pth"
    if not ckpt.is_file():
        raise NearError(f"{ckpt}: no NCSN checkpoint (has the ncsn stage finished?)")
    net, sigmas = load_energy_model(str(ckpt), "cpu")
    in_dim = int(net.hparams["in_dim"])
    fn = EnergyFunction(str(ckpt), str(rms) if rms.is_file() else None, "cpu", in_dim, normalize=rms.is_file())
    lvl = level % len(sigmas)
    return (lambda x: fn(x, lvl)), in_dim, float(sigmas[lvl])


def amp_scorer(run_dir: Path):
    """Scorer of the AMP discriminator in `run_dir/nn/checkpoint.pth` (the style reward)."""
    from near.training.algos.amp import load_discriminator

    ckpt = Path(run_dir) / "nn" / "checkpoint.pth"
    if not ckpt.is_file():
        raise NearError(f"{ckpt}: no AMP checkpoint (has the rl stage written one?)")
    return load_discriminator(str(ckpt), "cpu")


def _panels(run_dir: Path, fig: dict) -> list[dict]:
    extent = tuple(float(v) for v in fig["extent"])
    if fig["model"] == "amp":
        score, in_dim = amp_scorer(run_dir)
        X, Y, Z = landscape(score, in_dim, extent, fig["resolution"])
        return [{"title": "AMP discriminator", "x": X, "y": Y, "z": Z, "label": "style reward"}]
    panels = []
    for level in fig["sigma_levels"]:
        score, in_dim, sigma = ncsn_scorer(run_dir, int(level))
        X, Y, Z = landscape(score, in_dim, extent, fig["resolution"])
        panels.append({"title": f"level {level} (sigma={sigma:.3g})", "x": X, "y": Y, "z": Z, "label": "energy"})
    return panels


def landscape_figure(report, fig: dict) -> list[Path]:
    """Figure `fig` (kind: landscape) of a Report, for each of the first 4 selected runs: one panel
    per noise level of an ncsn run (``model: ncsn``), or the discriminator of an AMP run (``model: amp``)."""
    from near.report import figures
    from near.report.runs import runs_table, select_runs

    if fig["model"] not in ("ncsn", "amp"):
        raise NearError(f"landscape model {fig['model']!r}: expected 'ncsn' or 'amp'")
    # ncsn jobs log few or no scalars, so select among all jobs of the table, not the plotted runs
    table = report.jobs.assign(run=report.jobs["job_id"]) if report.jobs is not None else runs_table(report.path_meta)
    runs = select_runs(table, fig["select"], f"{report.spec['_file']}: figures '{fig['name']}'")
    if "run_dir" not in runs.columns or runs.empty:
        raise NearError("no selected run has a run_dir (is the job table there?)")
    written = []
    default_title = "AMP discriminator reward" if fig["model"] == "amp" else "NCSN energy landscape"
    for _, run in runs.head(4).iterrows():
        panels = _panels(Path(str(run["run_dir"])), fig)
        slug = figures.slug
        name = f"{slug(fig['name'])}_{slug(str(run.get('motion', run['run'])))}_{slug(str(run['run']))}"
        written += figures.heatmap_figure(panels, report.out / name, fig["title"] or default_title,
                                          tuple(report.spec["formats"]))
    return written
