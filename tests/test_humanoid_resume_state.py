"""The GPU learning check's small resume state: what goes across allocations, and what does not."""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import humanoid_resume_state as resume_state  # noqa: E402

from near.training.ncsn.model import EMA, EnergyNet  # noqa: E402
from near.training.ncsn.trainer import FORMAT, load_energy_model  # noqa: E402


def test_pack_keeps_weights_and_counters_drops_env_state_and_unpacks(tmp_path, monkeypatch):
    out = tmp_path / "out"
    run = out / "walk" / "NEAR0"
    (run / "nn").mkdir(parents=True)
    (run / "summaries").mkdir()
    (run / "summaries" / "events.x").write_bytes(b"event")
    (run / "config.yaml").write_text("task: {}\n")
    big_env = {"ref_pose": torch.zeros(256, 301, 45)}  # the env state: large, not needed to go on
    torch.save({"format": "near-rl-v1", "model": {"w": torch.ones(3)}, "optimizer": {"state": {}}, "epoch": 7,
                "frame": 1234, "extra": {"annealer": {"idx": 2}}, "env_state": big_env, "agent_obs": torch.ones(4),
                "wall_time": 5.0}, run / "nn" / "checkpoint.pth")
    amp = out / "walk" / "AMP0"
    (amp / "nn").mkdir(parents=True)
    torch.save({"format": "near-rl-v1", "model": {"w": torch.ones(2)}, "epoch": 3,
                "extra": {"disc": {"w": torch.ones(2)}, "replay": {"buf": torch.zeros(100_000)}}},
               amp / "nn" / "checkpoint.pth")
    ncsn = out / "walk" / "ncsn0"
    (ncsn / "nn").mkdir(parents=True)
    net = EnergyNet(6, [8], 4, [8], num_levels=3)
    ema = EMA(net)
    for v in ema.shadow.values():
        v.add_(1.0)  # EMA weights differ from the trained ones
    torch.save({"format": FORMAT, "hparams": net.hparams, "sigmas": torch.tensor([1.0, 0.5, 0.1]),
                "model": net.state_dict(), "ema": ema.state_dict(), "optimizer": {"big": torch.zeros(10_000)},
                "step": 40}, ncsn / "nn" / "checkpoint.pth")
    torch.save({"mean": torch.zeros(6)}, ncsn / "nn" / "running_mean_std.pth")
    config = "train: {params: {config: {near_config: {training: {n_iters: 40}}}}}\n"
    (ncsn / "ncsn_config.yaml").write_text(config)
    # an energy model stopped before its last iteration: left out (its optimiser state is most of it)
    unfinished = out / "walk" / "ncsn1"
    (unfinished / "nn").mkdir(parents=True)
    torch.save({"format": FORMAT, "hparams": net.hparams, "model": net.state_dict(), "step": 39},
               unfinished / "nn" / "checkpoint.pth")
    (unfinished / "ncsn_config.yaml").write_text(config)
    monkeypatch.setattr(resume_state, "PART_BYTES", 4096)  # several parts
    parts = resume_state.pack(str(out), str(tmp_path / "export"))
    assert len(parts) > 1 and all(os.path.getsize(p) <= 4096 for p in parts)

    again = tmp_path / "again"
    resume_state.unpack(str(tmp_path / "export"), str(again))
    state = torch.load(again / "walk" / "NEAR0" / "nn" / "checkpoint.pth", weights_only=False)
    assert state["epoch"] == 7 and state["frame"] == 1234 and state["extra"] == {"annealer": {"idx": 2}}
    assert torch.equal(state["model"]["w"], torch.ones(3)) and state["wall_time"] == 5.0
    assert "env_state" not in state and "agent_obs" not in state
    assert (again / "walk" / "NEAR0" / "summaries" / "events.x").read_bytes() == b"event"
    assert resume_state.is_slim(str(again / "walk" / "ncsn0")) and not resume_state.is_slim(str(ncsn))
    loaded, sigmas = load_energy_model(str(again / "walk" / "ncsn0" / "nn" / "checkpoint.pth"), "cpu", use_ema=True)
    ema.copy_to(net)  # the exported weights are the EMA ones
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), net.state_dict().values()))
    assert torch.equal(sigmas, torch.tensor([1.0, 0.5, 0.1]))
    assert "optimizer" not in torch.load(again / "walk" / "ncsn0" / "nn" / "checkpoint.pth", weights_only=False)
    assert not (again / "walk" / "ncsn1").exists()
    amp_state = torch.load(again / "walk" / "AMP0" / "nn" / "checkpoint.pth", weights_only=False)
    assert set(amp_state["extra"]) == {"disc"} and amp_state["epoch"] == 3  # the replay buffer refills
