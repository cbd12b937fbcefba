"""Learnt-reward landscape: a real (untrained) EnergyNet scored over a 2-D grid, drawn as heatmaps."""

import numpy as np
import torch

from near.report import figures, landscape


def test_energy_landscape_figure(tmp_path):
    from near.training.ncsn.model import EnergyNet, energies

    torch.manual_seed(0)
    net = EnergyNet(4, [16], 8, [16], num_levels=3)
    sigmas = torch.tensor([1.0, 0.5, 0.1])
    panels = []
    for level in (0, 2):
        X, Y, Z = landscape.landscape(lambda x: energies(net, x, level, sigmas), 4, (-1, 1, 0, 2), resolution=20)
        assert X.shape == Y.shape == Z.shape == (20, 20) and np.isfinite(Z).all()
        assert X.min() == -1 and Y.max() == 2
        # the panel really is the model's energy at those points
        p = torch.tensor([[X[3, 5], Y[3, 5]] * 2], dtype=torch.float32)
        assert abs(Z[3, 5] - float(energies(net, p, level, sigmas)[0])) < 1e-5
        panels.append({"title": f"level {level}", "x": X, "y": Y, "z": Z, "label": "energy"})
    files = figures.heatmap_figure(panels, tmp_path / "land", "NCSN", walls=[(-0.2, 0.5, 0.2, 1.5)])
    assert [f.suffix for f in files] == [".pdf", ".png"] and all(f.stat().st_size > 1000 for f in files)


def test_landscape_figures_from_real_ncsn_and_amp_checkpoints(tmp_path):
    """`kind: landscape` through a Report: a trained ncsn run (model: ncsn, one panel per noise level)
    and a trained mazeAMP run (model: amp, its discriminator's style reward), real `near train` runs."""
    import pandas as pd
    import yaml

    from _training_helpers import near_train
    from near.report.pipeline import Report
    from near.training.algos.amp import load_discriminator
    from near.training.ncsn.reward import EnergyFunction

    cache = str(tmp_path / "cache")
    ncsn, amp = tmp_path / "exp" / "runs" / "ncsn", tmp_path / "exp" / "runs" / "amp"
    nc = "++train.params.config.near_config.training"
    proc = near_train("ncsn", ["task=mazeNEAR", f"run_dir={ncsn}", f"{nc}.n_iters=60", f"{nc}.eval_freq=30"], cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = near_train("rl", ["task=mazeAMP", f"run_dir={amp}", "num_envs=16", "max_iterations=1"], cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = pd.DataFrame([
        {"job_id": "ncsn1", "stage": "ncsn", "state": "done", "run_dir": str(ncsn), "algorithm": "NEAR", "motion": "maze"},
        {"job_id": "amp1", "stage": "rl", "state": "done", "run_dir": str(amp), "algorithm": "AMP", "motion": "maze"},
        {"job_id": "amp2", "stage": "rl", "state": "failed", "run_dir": str(tmp_path / "none"), "algorithm": "PPO",
         "motion": "maze"},
    ])
    spec = tmp_path / "land.yaml"
    spec.write_text(yaml.safe_dump({
        "tags": {"loss": {"label": "NCSN loss", "optional": True}},
        "figures": [
            {"kind": "landscape", "name": "energy", "model": "ncsn", "select": {"stage": "ncsn"},
             "extent": [0.0, 512.0, 0.0, 512.0], "resolution": 16, "sigma_levels": [0, -1]},
            {"kind": "landscape", "name": "disc", "model": "amp", "select": {"algorithm": "AMP"},
             "extent": [0.0, 512.0, 0.0, 512.0], "resolution": 16},
            {"kind": "landscape", "name": "nockpt", "model": "amp", "select": {"algorithm": "PPO"}},
        ],
        "tables": []}))
    from near.commands.report import ncsn_scorer, scorers

    rep = Report(tmp_path / "exp", spec, tmp_path / "out", workers=1, jobs=jobs, log=lambda m: None,
                 scorers=scorers())
    names = {p.name for p in rep.run()}
    assert {"energy_maze_ncsn1.png", "energy_maze_ncsn1.pdf", "disc_maze_amp1.png", "disc_maze_amp1.pdf"} <= names
    assert all((tmp_path / "out" / n).stat().st_size > 1000 for n in names)
    # a run without a checkpoint is skipped with a warning naming the figure, not an error
    assert any("'nockpt' skipped" in w and "no AMP checkpoint" in w for w in rep.warnings)
    # the AMP panel is the discriminator the run trained (layer sizes from cfg/train/mazeAMPPPO.yaml)
    score, in_dim = load_discriminator(str(amp / "nn" / "checkpoint.pth"))
    assert in_dim == 4
    state = torch.load(amp / "nn" / "checkpoint.pth", weights_only=False)
    assert [w.shape[0] for k, w in state["extra"]["disc"].items() if k.startswith("trunk") and k.endswith("weight")] \
        == [256, 128]
    X, Y, Z = landscape.landscape(score, in_dim, (0.0, 512.0, 0.0, 512.0), 16)
    assert np.isfinite(Z).all() and Z.std() > 0
    # and the ncsn panel is the energy the rl stage would use as reward
    fn = EnergyFunction(str(ncsn / "nn" / "checkpoint.pth"), str(ncsn / "nn" / "running_mean_std.pth"), "cpu", 4)
    scorer, _, _ = ncsn_scorer(ncsn, 0)
    p = torch.tensor([[100.0, 300.0, 100.0, 300.0]])
    assert torch.allclose(scorer(p), fn(p, 0))
