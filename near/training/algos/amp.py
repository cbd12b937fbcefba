"""AMP (Peng et al., 2021) on near's PPO: a discriminator on state transitions as style reward.

Conventions follow NEAR's AMP baseline (IsaacGymEnvs' formulation) and its config names
(``params.config``): ``amp_replay_buffer_size``, ``amp_replay_keep_prob``, ``amp_batch_size``,
``amp_minibatch_size``, ``disc_coef``, ``disc_logit_reg``, ``disc_grad_penalty``,
``disc_reward_scale``, ``disc_weight_decay``, ``normalize_amp_input``, ``task_reward_w``,
``disc_reward_w``; the discriminator's layers come from ``params.network.disc.units`` /
``activation`` (declared in :mod:`near.training.settings`: :class:`AMPConfig`,
:class:`AMPNetwork`). The demonstrations are the environment's whole ``demo_transitions()`` set
(NEAR's ``amp_obs_demo_buffer_size`` is refused: nothing here would read it).

- The discriminator D scores *transitions* (``infos['paired_obs']``: ``numObsSteps`` consecutive
  state feature vectors, flattened); demonstrations are labelled 1, policy transitions 0.
- Loss: binary cross-entropy on both + ``disc_grad_penalty`` * E_demo[|grad_x D|^2] +
  ``disc_logit_reg`` * |w_last|^2 + ``disc_weight_decay`` * sum |w|^2, times ``disc_coef``.
- Style reward: ``-log(max(1 - sigmoid(D(x)), 1e-4)) * disc_reward_scale``; PPO maximises
  ``task_reward_w * task + disc_reward_w * style``.
- Policy transitions for the discriminator come half from the current rollout, half from a
  replay buffer of past rollouts (every transition until it has been filled once, then each with
  probability ``amp_replay_keep_prob``, as NEAR's AMP; saved in checkpoints unless
  ``amp_replay_in_checkpoint`` is false, then a resumed run refills it).
- After each rollout (scored with the current D) and PPO update, D trains for ``mini_epochs``
  passes over ``amp_batch_size`` rollout transitions in steps of ``amp_minibatch_size`` (NEAR's
  meaning: rollout transitions per step), each joined by as many replayed ones.

Tensorboard tags: ``losses/disc_loss``, ``info/disc_demo_acc``, ``info/disc_agent_acc``,
``info/disc_demo_logit``, ``info/disc_agent_logit``, ``info/disc_grad_penalty``,
``info/disc_reward_mean``, ``info/disc_reward_std``, ``minibatch_combined_reward/step``,
``minibatch_shaped_task_reward/step``, ``minibatch_disc_reward/step`` (plus the PPO base's).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from rl_games.algos_torch import players
from rl_games.algos_torch.running_mean_std import RunningMeanStd
from torch import nn

from near.training.algos.ppo import PPOAgent
from near.training.registry import register_algorithm
from near.training.settings import AMPConfig, AMPNetwork, TrainParams, read_run_settings


class Discriminator(nn.Module):
    """MLP from a flattened transition to one logit."""

    def __init__(self, in_dim: int, units: Sequence[int] = (256, 256), activation: str = "relu"):
        super().__init__()
        act = {"relu": nn.ReLU, "elu": nn.ELU, "tanh": nn.Tanh}.get(activation)
        if act is None:
            raise ValueError(f"unknown discriminator activation {activation!r}")
        layers: list[nn.Module] = []
        d = in_dim
        for u in units:
            layers += [nn.Linear(d, u), act()]
            d = u
        self.trunk = nn.Sequential(*layers)
        self.logit = nn.Linear(d, 1)
        nn.init.uniform_(self.logit.weight, -1.0, 1.0)  # AMP's small-output init keeps early rewards smooth
        self.logit.weight.data.mul_(0.01)
        nn.init.zeros_(self.logit.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit(self.trunk(x)).squeeze(-1)

    def weights(self) -> list[torch.Tensor]:
        return [m.weight for m in self.modules() if isinstance(m, nn.Linear)]


class ReplayBuffer:
    """Fixed-size ring buffer of policy transitions (rows of a 2-D tensor); ``total``: rows ever stored."""

    def __init__(self, capacity: int, dim: int, device: torch.device | str = "cpu"):
        self.data = torch.zeros(capacity, dim, device=device)
        self.capacity, self.size, self.head, self.total = capacity, 0, 0, 0

    def store(self, x: torch.Tensor) -> None:
        self.total += x.shape[0]
        x = x[-self.capacity :]
        n = x.shape[0]
        idx = (self.head + torch.arange(n, device=self.data.device)) % self.capacity
        self.data[idx] = x.to(self.data.device)
        self.head = (self.head + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.size == 0:
            raise RuntimeError("sampling from an empty replay buffer")
        idx = torch.randint(0, self.size, (n,), device=self.data.device, generator=generator)
        return self.data[idx]

    def state_dict(self) -> dict:
        return {"data": self.data[: self.size].clone(), "head": self.head, "size": self.size, "total": self.total}

    def load_state_dict(self, d: dict) -> None:
        self.size, self.head = int(d["size"]), int(d["head"])
        self.total = int(d.get("total", self.size))
        self.data[: self.size] = d["data"].to(self.data.device)


def replay_keep(replay: ReplayBuffer, n: int, keep_prob: float, device: torch.device | str) -> torch.Tensor:
    """Which of ``n`` new policy transitions enter the replay buffer: all of them until it has been
    filled once, then each with ``keep_prob`` (NEAR's AMP: its buffer starts full of early rollouts
    and changes slowly after)."""
    if replay.total < replay.capacity:
        return torch.ones(n, dtype=torch.bool, device=device)
    return torch.rand(n, device=device) < keep_prob


def disc_loss(
    disc: Discriminator,
    demo: torch.Tensor,
    agent: torch.Tensor,
    grad_penalty: float = 10.0,
    logit_reg: float = 0.05,
    weight_decay: float = 1e-4,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total discriminator loss (before ``disc_coef``) and its parts for logging."""
    demo = demo.detach().requires_grad_(True)
    demo_logit = disc(demo)
    agent_logit = disc(agent.detach())
    bce = 0.5 * (
        F.binary_cross_entropy_with_logits(demo_logit, torch.ones_like(demo_logit))
        + F.binary_cross_entropy_with_logits(agent_logit, torch.zeros_like(agent_logit))
    )
    grad = torch.autograd.grad(demo_logit.sum(), demo, create_graph=True)[0]
    gp = grad.pow(2).sum(dim=-1).mean()
    reg_logit = disc.logit.weight.pow(2).sum()
    reg_wd = sum(w.pow(2).sum() for w in disc.weights())
    loss = bce + grad_penalty * gp + logit_reg * reg_logit + weight_decay * reg_wd
    with torch.no_grad():
        info = {
            "disc_loss": loss.detach(),
            "disc_bce": bce.detach(),
            "disc_grad_penalty": gp.detach(),
            "disc_demo_acc": (demo_logit > 0).float().mean(),
            "disc_agent_acc": (agent_logit < 0).float().mean(),
            "disc_demo_logit": demo_logit.mean(),
            "disc_agent_logit": agent_logit.mean(),
        }
    return loss, info


@torch.no_grad()
def style_reward(disc: Discriminator, x: torch.Tensor, scale: float = 2.0) -> torch.Tensor:
    """AMP style reward of transitions x: -log(max(1 - sigmoid(D(x)), 1e-4)) * scale."""
    prob = torch.sigmoid(disc(x))
    return -torch.log(torch.clamp(1.0 - prob, min=1e-4)) * scale


class AMPAgent(PPOAgent):
    """PPO whose reward mixes the task reward with an AMP discriminator's style reward."""

    def __init__(self, base_name: str, params: dict[str, Any]):
        super().__init__(base_name, params)
        train: TrainParams = params["config"]["near_params"]
        cfg: AMPConfig = train.config
        disc_cfg = train.network.disc
        env = self.vec_env.env
        self.paired_dim = int(env.paired_obs_dim)
        dev = self.ppo_device
        self.task_reward_w = cfg.task_reward_w
        self.disc_reward_w = cfg.disc_reward_w
        self.disc_coef = cfg.disc_coef
        self.disc_logit_reg = cfg.disc_logit_reg
        self.disc_grad_penalty = cfg.disc_grad_penalty
        self.disc_reward_scale = cfg.disc_reward_scale
        self.disc_weight_decay = cfg.disc_weight_decay
        self.amp_batch_size = cfg.amp_batch_size
        self.amp_minibatch_size = cfg.amp_minibatch_size
        self.amp_replay_keep_prob = cfg.amp_replay_keep_prob
        self.disc = Discriminator(self.paired_dim, disc_cfg.units, disc_cfg.activation).to(dev)
        disc_lr = cfg.learning_rate if cfg.disc_learning_rate is None else cfg.disc_learning_rate
        self.disc_optimizer = torch.optim.Adam(self.disc.parameters(), lr=disc_lr)
        self.amp_normalizer = RunningMeanStd((self.paired_dim,)).to(dev) if cfg.normalize_amp_input else None
        self.replay = ReplayBuffer(cfg.amp_replay_buffer_size, self.paired_dim, dev)
        self.replay_in_checkpoint = cfg.amp_replay_in_checkpoint
        self.demo = env.demo_transitions().to(dev)
        if self.demo.shape[-1] != self.paired_dim:
            raise ValueError(f"demo_transitions() rows have {self.demo.shape[-1]} features, paired_obs {self.paired_dim}")
        self._reward_stats: dict[str, float] = {}
        self._disc_stats: dict[str, float] = {}

    def _norm(self, x: torch.Tensor, update: bool = False) -> torch.Tensor:
        if self.amp_normalizer is None:
            return x
        self.amp_normalizer.train(update)
        out = self.amp_normalizer(x)
        self.amp_normalizer.eval()
        return out

    def compute_rewards(self, rollout: dict[str, Any]) -> torch.Tensor:
        paired = rollout["paired_obs"]
        h, n, d = paired.shape
        style = style_reward(self.disc, self._norm(paired.reshape(h * n, d)), self.disc_reward_scale).reshape(h, n, 1)
        task = rollout["task_rewards"]
        combined = self.task_reward_w * task + self.disc_reward_w * style
        self._reward_stats = {
            "disc_reward_mean": float(style.mean()),
            "disc_reward_std": float(style.std()),
            "combined": float(combined.mean()),
            "task": float(task.mean()),
        }
        return combined

    def train_epoch(self):
        result = super().train_epoch()
        self.update_discriminator(self.last_rollout["paired_obs"].reshape(-1, self.paired_dim))
        return result

    def update_discriminator(self, agent_obs: torch.Tensor) -> None:
        """Train D on this rollout's transitions, the replay buffer and the demonstrations: per
        mini-epoch ``amp_batch_size`` rollout transitions in steps of ``amp_minibatch_size``, each
        joined by as many from the replay buffer (once it holds any) and scored against
        ``amp_minibatch_size`` demonstrations, as NEAR's AMP does in each PPO minibatch."""
        self.disc.train()
        dev = agent_obs.device
        n_agent = min(self.amp_batch_size, agent_obs.shape[0])
        mb = min(self.amp_minibatch_size, n_agent)
        self._norm(torch.cat([agent_obs[torch.randperm(agent_obs.shape[0], device=dev)[:n_agent]],
                              self.demo[torch.randint(0, self.demo.shape[0], (n_agent,), device=self.demo.device)]]),
                   update=True)
        sums: dict[str, torch.Tensor] = {}
        count = 0
        for _ in range(self.mini_epochs_num):
            perm = torch.randperm(agent_obs.shape[0], device=dev)[:n_agent]
            for start in range(0, n_agent, mb):
                cur = agent_obs[perm[start:start + mb]]
                demo = self.demo[torch.randint(0, self.demo.shape[0], (cur.shape[0],), device=self.demo.device)]
                if self.replay.size > 0:
                    cur = torch.cat([cur, self.replay.sample(cur.shape[0])])
                loss, info = disc_loss(self.disc, self._norm(demo), self._norm(cur), self.disc_grad_penalty,
                                       self.disc_logit_reg, self.disc_weight_decay)
                self.disc_optimizer.zero_grad(set_to_none=True)
                (self.disc_coef * loss).backward()
                self.disc_optimizer.step()
                for k, v in info.items():  # kept on the device: one read-back per epoch, not per step
                    sums[k] = sums[k] + v if k in sums else v
                count += 1
        self._disc_stats = {k: float(v) / max(count, 1) for k, v in sums.items()}
        self.disc.eval()
        self.replay.store(agent_obs[replay_keep(self.replay, agent_obs.shape[0], self.amp_replay_keep_prob,
                                                agent_obs.device)])

    def write_extra_stats(self, frame: int, epoch_num: int) -> None:
        w = self.writer
        s = self._disc_stats
        if s:
            w.add_scalar("losses/disc_loss", s["disc_loss"], frame)
            for key in ("disc_demo_acc", "disc_agent_acc", "disc_demo_logit", "disc_agent_logit", "disc_grad_penalty"):
                w.add_scalar(f"info/{key}", s[key], frame)
        r = self._reward_stats
        if r:
            w.add_scalar("info/disc_reward_mean", r["disc_reward_mean"], frame)
            w.add_scalar("info/disc_reward_std", r["disc_reward_std"], frame)
            w.add_scalar("minibatch_combined_reward/step", r["combined"], frame)
            w.add_scalar("minibatch_shaped_task_reward/step", r["task"], frame)
            w.add_scalar("minibatch_disc_reward/step", r["disc_reward_mean"], frame)

    def extra_state(self) -> dict[str, Any]:
        return {
            "disc": self.disc.state_dict(),
            "disc_optimizer": self.disc_optimizer.state_dict(),
            "amp_normalizer": None if self.amp_normalizer is None else self.amp_normalizer.state_dict(),
            "replay": self.replay.state_dict() if self.replay_in_checkpoint else None,
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.disc.load_state_dict(state["disc"])
        self.disc_optimizer.load_state_dict(state["disc_optimizer"])
        if self.amp_normalizer is not None and state.get("amp_normalizer") is not None:
            self.amp_normalizer.load_state_dict(state["amp_normalizer"])
        if state.get("replay") is not None:  # a slim resume state leaves it out: it refills in a few epochs
            self.replay.load_state_dict(state["replay"])


def load_discriminator(checkpoint: str, device: str = "cpu"):
    """The style reward of a trained AMP run: ``(score, in_dim)`` with ``score(paired (B, in_dim)) -> (B,)``.

    ``checkpoint`` is an AMP run's ``<run_dir>/nn/checkpoint.pth`` (written by ``near train rl``).
    The discriminator's layer sizes come from the saved weights; its activation and
    ``disc_reward_scale`` from the run's ``config.yaml`` when present (else the declared defaults). The
    score is the reward the policy was trained on (:func:`style_reward` of the normalised input).
    """
    import os

    from near.errors import ConfigError
    from near.training import runtime

    state = runtime.load_checkpoint(checkpoint, device)
    extra = state.get("extra") if isinstance(state, dict) else None
    if not isinstance(extra, dict) or "disc" not in extra:
        raise ConfigError(f"{checkpoint} has no AMP discriminator (is it an AMP run's nn/checkpoint.pth?)")
    weights = extra["disc"]
    trunk = sorted((int(k.split(".")[1]), v) for k, v in weights.items() if k.startswith("trunk.") and k.endswith(".weight"))
    in_dim = int(trunk[0][1].shape[1]) if trunk else int(weights["logit.weight"].shape[1])
    disc_cfg, amp_cfg = AMPNetwork().disc, AMPConfig()
    config = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(checkpoint))), "config.yaml")
    if os.path.isfile(config):
        params = read_run_settings(config).train.params
        if isinstance(params.config, AMPConfig) and isinstance(params.network, AMPNetwork):
            disc_cfg, amp_cfg = params.network.disc, params.config
    activation, scale = disc_cfg.activation, amp_cfg.disc_reward_scale
    disc = Discriminator(in_dim, [int(w.shape[0]) for _, w in trunk], activation).to(device)
    disc.load_state_dict(weights)
    disc.eval()
    norm = None
    if extra.get("amp_normalizer") is not None:
        norm = RunningMeanStd((in_dim,)).to(device)
        norm.load_state_dict(extra["amp_normalizer"])
        norm.eval()

    def score(paired: torch.Tensor) -> torch.Tensor:
        x = paired.to(device, torch.float32)
        with torch.no_grad():
            return style_reward(disc, norm(x) if norm is not None else x, scale)

    return score, in_dim


register_algorithm("amp_continuous", lambda **kwargs: AMPAgent(**kwargs),
                   lambda **kwargs: players.PpoPlayerContinuous(**kwargs))
