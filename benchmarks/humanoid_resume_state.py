"""The small state a GPU learning check needs to go on in a later, separate allocation.

A GPU machine's files are gone with it, and what comes back from it is limited (files of at most
16 MiB, about 60 MiB in all per call): :func:`pack` keeps, of a learning check's ``--out``, each rl
run's policy, value function, normalisers, optimiser, epoch and frame counters and algorithm state
(NEAR's annealing and reward offset; AMP's discriminator, not its replay buffer) with its config
and summaries, each finished energy model's EMA weights (as its weights) and input normaliser (an
unfinished one is left out: the next call trains it anew), and the budget so far; not the env's
state (a resumed run starts from fresh resets). The tar is written as ``resume.tar.NN`` parts of
at most 15 MiB; :func:`unpack` joins and extracts them.
"""

from __future__ import annotations

import glob
import io
import os
import tarfile

import torch

PART_BYTES = 15 * 2**20
SLIM_MARK = "slim"  # in an energy model's run dir: its checkpoint holds inference weights only
RL_KEYS = ("format", "model", "optimizer", "epoch", "frame", "last_lr", "total_time", "entropy_coef", "extra",
           "wall_time", "last_mean_rewards")


def is_slim(ncsn_dir: str) -> bool:
    """Whether an energy model came back from :func:`pack` (trained; not to be trained on)."""
    return os.path.isfile(os.path.join(ncsn_dir, SLIM_MARK))


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _saved(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _slim_ncsn(state: dict) -> dict:
    from near.training.ncsn.model import EMA, EnergyNet

    if state.get("ema") is not None:
        net = EnergyNet.from_hparams(state["hparams"])
        net.load_state_dict(state["model"])
        ema = EMA(net)
        ema.load_state_dict(state["ema"])
        ema.copy_to(net)
        state["model"] = net.state_dict()
    return {k: state[k] for k in ("format", "hparams", "sigmas", "model", "step") if k in state} | {"ema": None}


def _finished(ncsn_dir: str, state: dict) -> bool:
    """Whether an energy model's checkpoint is at the last iteration its config asks for."""
    import yaml

    with open(os.path.join(ncsn_dir, "ncsn_config.yaml")) as fh:
        n_iters = yaml.safe_load(fh)["train"]["params"]["config"]["near_config"]["training"]["n_iters"]
    return int(state["step"]) >= int(n_iters)


def pack(out: str, dest: str) -> list[str]:
    """Write the small resume state of learning check `out` to `dest` as parts; returns their paths."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in ("budget.json", "curves.csv", "curves.md"):
            if os.path.isfile(os.path.join(out, path)):
                tar.add(os.path.join(out, path), arcname=path)
        for ckpt in sorted(glob.glob(os.path.join(out, "*", "*", "nn", "checkpoint.pth"))):
            run = os.path.dirname(os.path.dirname(ckpt))
            rel = os.path.relpath(run, out)
            state = torch.load(ckpt, map_location="cpu", weights_only=False)
            if os.path.basename(run).startswith("ncsn"):
                if not _finished(run, state):
                    # its optimiser state would be most of the export: the next call trains it anew
                    print(f"resume state: energy model {rel} is unfinished and left out", flush=True)
                    continue
                _add_bytes(tar, f"{rel}/nn/checkpoint.pth", _saved(_slim_ncsn(state)))
                tar.add(os.path.join(run, "nn", "running_mean_std.pth"), arcname=f"{rel}/nn/running_mean_std.pth")
                _add_bytes(tar, f"{rel}/{SLIM_MARK}", b"")
                continue
            slim = {k: state[k] for k in RL_KEYS if k in state}
            if isinstance(slim.get("extra"), dict) and "replay" in slim["extra"]:
                # AMP's replay of policy transitions (84 MB at NEAR's size) refills in a few epochs
                slim["extra"] = {k: v for k, v in slim["extra"].items() if k != "replay"}
            _add_bytes(tar, f"{rel}/nn/checkpoint.pth", _saved(slim))
            for extra in ("config.yaml", "summaries"):
                if os.path.exists(os.path.join(run, extra)):
                    tar.add(os.path.join(run, extra), arcname=f"{rel}/{extra}")
    data = buf.getvalue()
    os.makedirs(dest, exist_ok=True)
    parts = []
    for i in range(0, len(data), PART_BYTES):
        parts.append(os.path.join(dest, f"resume.tar.{i // PART_BYTES:02d}"))
        with open(parts[-1], "wb") as fh:
            fh.write(data[i:i + PART_BYTES])
    return parts


def unpack(src: str, out: str) -> None:
    """Join `src`'s ``resume.tar.NN`` parts and extract them into `out`."""
    parts = sorted(glob.glob(os.path.join(src, "resume.tar.*")))
    if not parts:
        raise SystemExit(f"near: error: no resume.tar.NN parts in {src}")
    data = b"".join(open(p, "rb").read() for p in parts)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(out, filter="data")
