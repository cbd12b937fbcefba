"""NCSN (NEAR energy model) training iterations per second.

    python benchmarks/bench_ncsn.py [--device cpu|cuda:0] [--batch 128] [--seconds 3]

One iteration = NEAR's maze model (ncsnv2, [32, 64] -> 128 -> [64, 32, 8]) on a batch of
demo transitions: standardisation, annealed DSM loss (a double backward), Adam, EMA.
Prints the rate at a 16x larger batch too, then LAST the rate at ``--batch`` as a ratio to
the larger batch's rate in iterations (how much of the cost is per-iteration overhead).
"""

from __future__ import annotations

import argparse
import time

import torch


def rate(batch: int, device: str, seconds: float) -> float:
    from rl_games.algos_torch.running_mean_std import RunningMeanStd

    from near.training.envs.maze import MazeEnv
    from near.training.ncsn.model import EMA, EnergyNet, anneal_dsm_loss, sigma_schedule

    data = MazeEnv(1).demo_transitions().to(device)
    net = EnergyNet(4, [32, 64], 128, [64, 32, 8], 50, ncsnv2=True).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    ema = EMA(net)
    rms = RunningMeanStd((4,)).to(device)
    sigmas = sigma_schedule(20.0, 0.01, 50, True, device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def step() -> None:
        x = rms(data[torch.randint(len(data), (batch,), device=device)])
        labels = torch.randint(50, (batch,), device=device)
        loss = anneal_dsm_loss(net, x, labels, sigmas)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        ema.update(net)

    for _ in range(20):
        step()
    sync()
    iters, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(20):
            step()
        iters += 20
        sync()
    return iters / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    big = rate(args.batch * 16, args.device, args.seconds)
    print(f"batch={args.batch * 16}: {big:,.0f} it/s ({big * args.batch * 16:,.0f} samples/s)", flush=True)
    small = rate(args.batch, args.device, args.seconds)
    print(f"batch={args.batch}: {small:,.0f} it/s ({small * args.batch:,.0f} samples/s)", flush=True)
    print(f"ncsn iterations/s at batch {args.batch} on {args.device}: {small:,.0f} "
          f"= {small / big:.2f}x the batch-{args.batch * 16} rate")


if __name__ == "__main__":
    main()
