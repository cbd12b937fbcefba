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
