"""NEAR's energy reward: trained energy model(s) -> per-transition rewards.

* :class:`EnergyFunction`: one or several (composed) energy models with their input
  normalisers; ``eb_model_checkpoint`` / ``running_mean_std_checkpoint`` are paths, or dicts
  ``{name: path}`` (same keys) to compose several models as a weighted sum. Weights come from
  ``inference.composition_weights`` (default equal) and each model is rescaled so that its mean
  demo energy matches the first model's (NEAR's energy scaling).
* :class:`NoiseAnnealer`: ``sigma_level >= 0`` fixes the noise level; ``-1`` anneals it
  (NEAR's ``ncsnv2-adaptive`` strategy: move to the next, less noisy, level once the policy's
  mean energy at the current level has risen by 2 % over its value when the level started).
  NEAR writes the rise as ``E >= E0 * 1.02``, which for a negative ``E0`` holds at once, so NEAR
  moves on every epoch while energies are negative; here a rise is measured on ``|E0|`` for
  either sign.
* :class:`RewardStandardiser`: NEAR's reward transform ``tanh((e - m) / 10)`` where ``m`` is
  the mean energy of the last ``k`` rollouts (refreshed every 3 epochs); with ``nonnegative``
  it is mapped onto [0, 1] as ``(1 + tanh((e - m) / 10)) / 2``. That matters with early
  termination: a reward centred on zero is negative for most of a falling policy's states
  (reference-state resets are expert-like and pull the mean up), so ending the episode early
  pays; a non-negative reward, like AMP's ``-log(1 - D)``, makes every step alive worth having.
  When the noise level moves on, the offset restarts from the new level's energies: an NCSNv2
  energy is divided by sigma, so a move scales every energy by sigma_k / sigma_k+1, and NEAR's
  offset, kept from the old level for up to two more epochs, then shifts every reward at once
  (the value function, fitted to the old rewards, sees a sudden loss).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import torch

from near.errors import ConfigError
from near.training import runtime


class EnergyFunction:
    """Energy of paired observations (..., D) -> (..., 1), at a noise-level index."""

    def __init__(self, checkpoints: Any, normalisers: Any, device: str, paired_dim: int, use_ema: bool = True,
                 normalize: bool = True, weights: Any = None, demo_transitions: torch.Tensor | None = None):
        from rl_games.algos_torch.running_mean_std import RunningMeanStd

        from near.training.ncsn.trainer import load_energy_model

        if checkpoints in (None, ""):
            raise ConfigError("near_config.inference.eb_model_checkpoint is empty: train an energy model with "
                              "`near train ncsn ... run_dir=DIR` and pass DIR/nn/checkpoint.pth (and "
                              "running_mean_std_checkpoint=DIR/nn/running_mean_std.pth)")
        if isinstance(checkpoints, str):
            checkpoints, normalisers = {"default": checkpoints}, {"default": normalisers}
        checkpoints = dict(checkpoints)
        if isinstance(normalisers, str) or normalisers is None:
            if normalize and len(checkpoints) > 1:
                raise ConfigError("inference.running_mean_std_checkpoint must be a dict with the same keys as "
                                  "inference.eb_model_checkpoint when composing energy models")
            normalisers = {k: normalisers for k in checkpoints}
        normalisers = dict(normalisers)
        if set(normalisers) != set(checkpoints):
            raise ConfigError("inference.running_mean_std_checkpoint keys "
                              f"{sorted(normalisers)} differ from eb_model_checkpoint keys {sorted(checkpoints)}")
        self.names = list(checkpoints)
        self.nets, self.norms, self.sigmas = [], [], None
        for name in self.names:
            net, sigmas = load_energy_model(str(checkpoints[name]), device, use_ema)
            if net.hparams["in_dim"] != paired_dim:
                raise ConfigError(f"energy model {checkpoints[name]} takes {net.hparams['in_dim']} features, "
                                  f"the environment's paired observations have {paired_dim} (numObsSteps mismatch?)")
            if self.sigmas is None:
                self.sigmas = sigmas
            elif sigmas.shape != self.sigmas.shape or not torch.allclose(sigmas, self.sigmas):
                raise ConfigError("composed energy models must share the noise schedule (sigma_begin, sigma_end, L)")
            norm = torch.nn.Identity()
            if normalize:
                norm = RunningMeanStd((paired_dim,)).to(device)
                path = str(normalisers[name])
                norm.load_state_dict(runtime.load_checkpoint(path, device))
                norm.eval()
            self.nets.append(net)
            self.norms.append(norm)
        self.num_levels = len(self.sigmas)
        if weights is None:
            w = [1.0 / len(self.names)] * len(self.names)
        elif isinstance(weights, (int, float)):
            w = [float(weights)]
        else:
            weights = dict(weights)
            w = [float(weights[n]) for n in self.names]
        self.weights = torch.tensor(w, device=device)
        self.scales = torch.ones(len(self.names), device=device)
        if len(self.names) > 1 and demo_transitions is not None:
            means = torch.stack([self._single(i, demo_transitions.to(device), 0).mean() for i in range(len(self.names))])
            self.scales = (means[0] / means).abs()

    def _single(self, i: int, x: torch.Tensor, level: int) -> torch.Tensor:
        labels = torch.full((x.shape[0],), int(level), dtype=torch.long, device=x.device)
        with torch.no_grad():
            return self.nets[i](self.norms[i](x), labels, self.sigmas[labels]).squeeze(-1)

    def __call__(self, paired: torch.Tensor, level: int) -> torch.Tensor:
        shape = paired.shape[:-1]
        flat = paired.reshape(-1, paired.shape[-1])
        total = torch.zeros(flat.shape[0], device=flat.device)
        for i in range(len(self.nets)):
            total = total + self.weights[i] * self.scales[i] * self._single(i, flat, level)
        return total.reshape(*shape, 1)


class NoiseAnnealer:
    """The noise-level index used for rewards (fixed, or annealed with ``sigma_level=-1``)."""

    def __init__(self, sigma_level: int, num_levels: int, ncsnv2: bool = True, progress_threshold: float = 0.02,
                 window: int = 3):
        self.annealing = int(sigma_level) == -1
        if not self.annealing and not 0 <= int(sigma_level) < num_levels:
            raise ConfigError(f"inference.sigma_level={sigma_level}: expected -1 (annealing) or 0..{num_levels - 1}")
        # NEAR anneals over all L levels with ncsnv2, over the first 10 otherwise
        self.levels = list(range(num_levels)) if ncsnv2 else list(range(min(10, num_levels)))
        self.idx = 0
        self.fixed = int(sigma_level)
        self.threshold = progress_threshold
        self.window = window
        self.recent: deque[float] = deque(maxlen=window)
        self.initial: float | None = None

    @property
    def level(self) -> int:
        return self.levels[self.idx] if self.annealing else self.fixed

    def update(self, mean_energy: float) -> bool:
        """Record the policy's mean energy at the current level; True when the level moved on."""
        if not self.annealing or self.idx == len(self.levels) - 1:
            return False
        self.recent.append(float(mean_energy))
        current = sum(self.recent) / len(self.recent)
        if self.initial is None:
            self.initial = current
        if current < self.initial + self.threshold * abs(self.initial):
            return False
        self.idx += 1
        self.recent.clear()
        self.initial = None
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"idx": self.idx, "recent": list(self.recent), "initial": self.initial}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.idx = int(state["idx"])
        self.recent = deque(state["recent"], maxlen=self.window)
        self.initial = state["initial"]


class RewardStandardiser:
    """NEAR's ``tanh((e - mean of the last k rollouts) / 10)`` reward transform (on [0, 1] with
    ``nonnegative``)."""

    def __init__(self, k: int = 3, refresh_every: int = 3, scale: float = 10.0, nonnegative: bool = False):
        self.k, self.refresh_every, self.scale, self.nonnegative = k, refresh_every, scale, nonnegative
        self.recent: deque[float] = deque(maxlen=k)
        self.offset: float | None = None

    def __call__(self, energy: torch.Tensor, epoch: int, mean: float | None = None) -> torch.Tensor:
        """Rewards of `energy` at `epoch` (`mean`: ``energy.mean()``, when the caller has it)."""
        self.recent.append(float(energy.mean()) if mean is None else mean)
        if self.offset is None or epoch % self.refresh_every == 0 or epoch == 1:
            self.offset = sum(self.recent) / len(self.recent)
        reward = torch.tanh((energy - self.offset) / self.scale)
        return (1.0 + reward) / 2.0 if self.nonnegative else reward

    def restart(self) -> None:
        """Forget the energies seen so far (the noise level changed their scale)."""
        self.recent.clear()
        self.offset = None

    def state_dict(self) -> dict[str, Any]:
        return {"recent": list(self.recent), "offset": self.offset}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.recent = deque(state["recent"], maxlen=self.k)
        self.offset = state["offset"]
