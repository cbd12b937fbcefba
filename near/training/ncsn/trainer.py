"""Stage ``ncsn``: train NEAR's energy model on the task's expert transitions.

Reads ``train.params.config.near_config``'s ``training``, ``model`` and ``optim`` settings
(:class:`near.training.settings.NEARSettings`; not ``inference``). The data are all windows of ``numObsSteps`` consecutive demo states
(``env.demo_transitions()``), standardised by a running mean/std (rl-games'
``RunningMeanStd``, updated on the training batches as in NEAR).

Outputs under ``run_dir``: ``summaries/`` (tags ``loss``, ``demo_data_energy/sigma_level_<c>``
and ``random_data_energy/sigma_level_<c>`` every ``eval_freq`` steps, step = iteration),
``nn/checkpoint.pth`` (model, EMA, optimiser, normaliser, step, every RNG, hyper-parameters;
written every ``snapshot_freq`` iterations, at the end and on SIGTERM/SIGUSR2) and
``nn/running_mean_std.pth`` (the normaliser's state dict, NEAR's file). Running again with the
same ``run_dir`` continues from the checkpoint.
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch

from near.errors import ConfigError
from near.training import runtime, tblog
from near.training.ncsn.model import EMA, EnergyNet, anneal_dsm_loss, energies, sigma_schedule
from near.training.settings import NEAROptim, NEARSettings

CHECKPOINT = "checkpoint.pth"
RMS_FILE = "running_mean_std.pth"
FORMAT = "near-ncsn-v1"


def _optimizer(params, optim: NEAROptim) -> torch.optim.Optimizer:
    if optim.optimizer == "Adam":
        return torch.optim.Adam(params, lr=optim.lr, weight_decay=optim.weight_decay, betas=(optim.beta1, 0.999),
                                amsgrad=optim.amsgrad)
    if optim.optimizer == "RMSProp":
        return torch.optim.RMSprop(params, lr=optim.lr, weight_decay=optim.weight_decay)
    return torch.optim.SGD(params, lr=optim.lr, momentum=0.9)


def resolve_feature_mask(spec: Any, env: Any) -> list[bool] | None:
    """``model.feature_mask``: None / 'None', a named env mask, or a list of booleans or kept indices."""
    if spec in (None, "", "None"):
        return None
    dim = env.paired_obs_dim
    if isinstance(spec, str):
        try:
            mask = env.feature_mask(spec)
        except KeyError as err:
            raise ConfigError(f"near_config.model.feature_mask: {err.args[0]}") from err
        return None if mask is None else mask.tolist()
    values = list(spec)
    if len(values) == dim and all(isinstance(v, bool) for v in values):
        return values
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        per = env.obs_per_step
        if any(v < 0 or v >= per for v in values):
            raise ConfigError(f"near_config.model.feature_mask: indices must be in [0, {per}) (features of one state)")
        return [(i % per) in values for i in range(dim)]
    raise ConfigError("near_config.model.feature_mask: expected a mask name, "
                      f"{dim} booleans, or indices of kept per-state features")


def build_model(near: NEARSettings, in_dim: int, feature_mask: list[bool] | None) -> EnergyNet:
    model = near.model
    return EnergyNet(
        in_dim=in_dim,
        encoder_hidden_layers=list(model.encoder_hidden_layers),
        latent_space_dim=model.latent_space_dim,
        decoder_hidden_layers=list(model.decoder_hidden_layers),
        num_levels=model.L,
        ncsnv2=model.ncsnv2,
        feature_mask=feature_mask,
        param_init=near.optim.param_init,
    )


def train_ncsn(near: NEARSettings, seed: int, run_dir: str, device: str, stop: runtime.StopRequest, env: Any) -> int:
    """Train (or continue training) the energy model; return 0 when done, 3 when stopped."""
    from rl_games.algos_torch.running_mean_std import RunningMeanStd
    from tensorboardX import SummaryWriter

    training, model_cfg = near.training, near.model
    n_iters, batch_size = training.n_iters, training.batch_size
    snapshot_freq, eval_freq, log_freq = training.snapshot_freq, training.eval_freq, training.log_freq
    anneal_power = training.anneal_power
    normalize = training.normalize_energynet_input
    grad_clip = near.optim.grad_clip_norm
    use_ema, ema_rate = model_cfg.ema, model_cfg.ema_rate
    num_levels = model_cfg.L
    sigmas = sigma_schedule(model_cfg.sigma_begin, model_cfg.sigma_end, num_levels, model_cfg.ncsnv2, device)

    data = env.demo_transitions().to(device)
    gen = torch.Generator(device="cpu").manual_seed(seed & 0x7FFFFFFF)
    perm = torch.randperm(len(data), generator=gen)
    n_test = max(1, len(data) // 10)
    test, train = data[perm[:n_test].to(device)], data[perm[n_test:].to(device)]
    lo, hi = data.min(0).values, data.max(0).values
    span = (hi - lo).clamp_min(1.0)
    random_data = lo - 0.25 * span + 1.5 * span * torch.rand(test.shape, generator=gen).to(device)
    # minibatches are drawn where the data is: indices made on the host and copied over would wait
    # for the GPU every iteration (a pageable copy), losing the overlap of launching and running
    batch_gen = gen if torch.device(device).type == "cpu" else \
        torch.Generator(device=device).manual_seed((seed + 1) & 0x7FFFFFFF)

    net = build_model(near, data.shape[1], resolve_feature_mask(model_cfg.feature_mask, env)).to(device)
    optimizer = _optimizer(net.parameters(), near.optim)
    ema = EMA(net, ema_rate) if use_ema else None
    rms = RunningMeanStd((data.shape[1],)).to(device)
    eval_net = build_model(near, data.shape[1], net.hparams["feature_mask"]).to(device) if use_ema else net
    eval_labels = sorted({i for i in range(num_levels) if i % max(1, int(num_levels * 0.2)) == 0} | {num_levels - 1})

    nn_dir, summaries = os.path.join(run_dir, "nn"), os.path.join(run_dir, "summaries")
    ckpt_path = os.path.join(nn_dir, CHECKPOINT)
    step = 0
    if os.path.isfile(ckpt_path):
        state = runtime.load_checkpoint(ckpt_path, device)
        if state.get("format") != FORMAT:
            raise ConfigError(f"{ckpt_path} is not a near ncsn checkpoint (format {state.get('format')!r})")
        if state["hparams"] != net.hparams:
            raise ConfigError(f"{ckpt_path} was trained with a different model ({state['hparams']}); "
                              "use a new run_dir for a different config")
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        rms.load_state_dict(state["running_mean_std"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        step = int(state["step"])
        gen.set_state(state["data_generator"].cpu())
        if batch_gen is not gen and state.get("batch_generator") is not None:
            batch_gen.set_state(state["batch_generator"].cpu())
        runtime.restore_rng(state["rng"])
        tblog.truncate_after(summaries, state["wall_time"])
        print(f"near: ncsn resumed from {ckpt_path} at iteration {step}", flush=True)
    else:
        tblog.truncate_after(summaries, None)
    os.makedirs(nn_dir, exist_ok=True)
    writer = SummaryWriter(summaries)

    # losses stay on the device until written in blocks: reading each back at once would make the
    # host wait for the GPU every iteration (the training step is launch-bound there)
    losses: list[tuple[int, torch.Tensor]] = []

    def write_losses() -> None:
        if not losses:
            return
        values = torch.stack([v for _, v in losses]).tolist()  # one read-back for the block
        for (at, _), value in zip(losses, values):
            writer.add_scalar("loss", value, at)
        losses.clear()

    def save() -> None:
        write_losses()
        writer.flush()
        state = {
            "format": FORMAT, "hparams": net.hparams, "model": net.state_dict(), "optimizer": optimizer.state_dict(),
            "ema": ema.state_dict() if ema is not None else None, "running_mean_std": rms.state_dict(),
            "sigmas": sigmas.cpu(), "step": step, "data_generator": gen.get_state(),
            "batch_generator": batch_gen.get_state(), "rng": runtime.capture_rng(),
            "normalize_energynet_input": normalize, "wall_time": runtime.now(),
        }
        # the normaliser file first: checkpoint.pth is the completion marker readers look for
        runtime.atomic_save(rms.state_dict(), os.path.join(nn_dir, RMS_FILE))
        runtime.atomic_save(state, ckpt_path)

    def evaluate() -> None:
        if ema is not None:
            eval_net.load_state_dict(net.state_dict())
            ema.copy_to(eval_net)
        eval_net.eval()
        rms.eval()
        with torch.no_grad():
            demo_in = rms(test) if normalize else test
            rand_in = rms(random_data) if normalize else random_data
            means = torch.stack([energies(eval_net, x, c, sigmas).mean() for c in eval_labels
                                 for x in (demo_in, rand_in)]).tolist()  # one read-back
            for k, c in enumerate(eval_labels):
                writer.add_scalar(f"demo_data_energy/sigma_level_{c}", means[2 * k], step)
                writer.add_scalar(f"random_data_energy/sigma_level_{c}", means[2 * k + 1], step)
        rms.train()
        net.train()

    t0, start_step = time.perf_counter(), step
    print(f"ncsn: training iterations {step + 1}..{n_iters} on {len(train)} demo transitions ({device})", flush=True)
    exit_code = runtime.EXIT_DONE
    net.train()
    rms.train()
    while step < n_iters:
        if stop.requested:
            save()
            exit_code = runtime.EXIT_INTERRUPTED
            break
        step += 1
        idx = torch.randint(len(train), (batch_size,), generator=batch_gen, device=batch_gen.device).to(device)
        x = train[idx]
        if normalize:
            x = rms(x)
        labels = torch.randint(num_levels, (batch_size,), generator=batch_gen, device=batch_gen.device).to(device)
        loss = anneal_dsm_loss(net, x, labels, sigmas, anneal_power)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
        optimizer.step()
        if ema is not None:
            ema.update(net)
        if step % log_freq == 0:
            losses.append((step, loss.detach()))
            if len(losses) >= 200:
                write_losses()
        if step % eval_freq == 0 or step == n_iters:
            evaluate()
        if step % 1000 == 0:
            rate = (step - start_step) / (time.perf_counter() - t0)
            print(f"ncsn iteration {step}/{n_iters} loss {loss.item():.4f} ({rate:.0f} it/s)", flush=True)
        if step == n_iters or step % snapshot_freq == 0:
            save()
    else:
        if step >= n_iters and not os.path.isfile(ckpt_path):
            save()
    write_losses()
    writer.flush()
    writer.close()
    return exit_code


def load_energy_model(checkpoint: str, device: str, use_ema: bool = True) -> tuple[EnergyNet, torch.Tensor]:
    """An energy net (EMA weights if requested and present) and its sigmas, from ``checkpoint``."""
    state = runtime.load_checkpoint(checkpoint, device)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ConfigError(f"{checkpoint} is not a near ncsn checkpoint (train it with `near train ncsn`)")
    net = EnergyNet.from_hparams(state["hparams"]).to(device)
    net.load_state_dict(state["model"])
    if use_ema and state.get("ema") is not None:
        ema = EMA(net)
        ema.load_state_dict(state["ema"])
        ema.copy_to(net)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net, state["sigmas"].to(device)
