"""NEAR's noise-conditioned energy model (NCSN with an energy head), its loss and EMA.

* Noise scales: ``L`` levels from ``sigma_begin`` down to ``sigma_end`` - geometric for
  ``ncsnv2`` (NCSNv2), uniform otherwise (as NEAR).
* :class:`EnergyNet`: an MLP encoder (ELU) to a latent space and an MLP decoder (ELU) to one
  scalar. NCSNv1 conditions on the noise level by adding a sinusoidal embedding of its index
  to the latent; NCSNv2 is unconditional and divides the output by sigma. The output is an
  unnormalised log-density: higher means "more like the demonstrations" (NEAR uses it
  directly as the reward). Optional boolean feature mask: masked input features are zeroed.
* :func:`anneal_dsm_loss`: denoising score matching on the energy's input gradient,
  weighted by ``sigma ** anneal_power``.
* :class:`EMA`: exponential moving average of the weights (used at inference when
  ``model.ema``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


def sigma_schedule(sigma_begin: float, sigma_end: float, num_levels: int, geometric: bool,
                   device: str | torch.device = "cpu") -> torch.Tensor:
    """The ``L`` noise scales, largest first."""
    if geometric:
        values = torch.exp(torch.linspace(math.log(sigma_begin), math.log(sigma_end), num_levels, dtype=torch.float64))
    else:
        values = torch.linspace(sigma_begin, sigma_end, num_levels, dtype=torch.float64)
    return values.float().to(device)


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ELU())
    return nn.Sequential(*layers)


def sinusoidal_embedding(index: torch.Tensor, dim: int, scale: float = 100.0) -> torch.Tensor:
    """Sinusoidal embedding (dim) of integer noise-level indices."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=index.device, dtype=torch.float32) * -(math.log(10000.0) / max(half - 1, 1)))
    angles = scale * index.float().unsqueeze(-1) * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class EnergyNet(nn.Module):
    """Energy of a transition ``x`` (B, in_dim) at a noise level -> (B, 1)."""

    def __init__(self, in_dim: int, encoder_hidden_layers: list[int], latent_space_dim: int,
                 decoder_hidden_layers: list[int], num_levels: int, ncsnv2: bool = True,
                 feature_mask: list[bool] | None = None, param_init: str = "xavier_uniform"):
        super().__init__()
        self.hparams = {
            "in_dim": in_dim, "encoder_hidden_layers": list(encoder_hidden_layers),
            "latent_space_dim": latent_space_dim, "decoder_hidden_layers": list(decoder_hidden_layers),
            "num_levels": num_levels, "ncsnv2": bool(ncsnv2),
            "feature_mask": None if feature_mask is None else [bool(b) for b in feature_mask],
            "param_init": param_init,
        }
        self.ncsnv2 = bool(ncsnv2)
        self.latent_dim = latent_space_dim
        self.encoder = _mlp([in_dim, *encoder_hidden_layers, latent_space_dim])
        self.decoder = nn.Sequential(_mlp([latent_space_dim, *decoder_hidden_layers, 1]), nn.ELU())
        mask = torch.ones(in_dim, dtype=torch.bool) if feature_mask is None else torch.tensor(feature_mask, dtype=torch.bool)
        if mask.numel() != in_dim:
            raise ValueError(f"feature mask has {mask.numel()} entries, the model input has {in_dim}")
        self.register_buffer("feature_mask", mask)
        if param_init == "xavier_uniform":
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    nn.init.xavier_uniform_(module.weight)
                    nn.init.constant_(module.bias, 0.01)

    @classmethod
    def from_hparams(cls, hparams: dict[str, Any]) -> "EnergyNet":
        return cls(**hparams)

    def forward(self, x: torch.Tensor, labels: torch.Tensor, used_sigmas: torch.Tensor) -> torch.Tensor:
        x = x * self.feature_mask
        latent = self.encoder(x)
        if self.ncsnv2:
            return self.decoder(latent) / used_sigmas.view(-1, 1)
        latent = latent + sinusoidal_embedding(labels, self.latent_dim)
        return self.decoder(latent)


def anneal_dsm_loss(net: EnergyNet, samples: torch.Tensor, labels: torch.Tensor, sigmas: torch.Tensor,
                    anneal_power: float = 2.0) -> torch.Tensor:
    """Annealed denoising score matching: match ``d energy / d x~`` to ``-(x~ - x) / sigma^2``."""
    used = sigmas[labels].view(-1, *([1] * (samples.dim() - 1)))
    perturbed = (samples + torch.randn_like(samples) * used).detach().requires_grad_(True)
    target = -(perturbed - samples) / used ** 2
    energy = net(perturbed, labels, used)
    scores = torch.autograd.grad(energy.sum(), perturbed, create_graph=True)[0]
    per_sample = 0.5 * ((scores - target) ** 2).reshape(len(samples), -1).sum(-1) * used.reshape(-1) ** anneal_power
    return per_sample.mean()


@torch.no_grad()
def energies(net: EnergyNet, x: torch.Tensor, level: int, sigmas: torch.Tensor) -> torch.Tensor:
    """Energies (B,) of ``x`` at noise level index ``level``."""
    labels = torch.full((x.shape[0],), int(level), dtype=torch.long, device=x.device)
    return net(x, labels, sigmas[labels]).squeeze(-1)


class EMA:
    """Exponential moving average of a module's trainable parameters."""

    def __init__(self, module: nn.Module, rate: float = 0.999):
        self.rate = rate
        self.shadow = {k: p.detach().clone() for k, p in module.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        pairs = [(self.shadow[k], p.detach()) for k, p in module.named_parameters() if k in self.shadow]
        shadows, params = [s for s, _ in pairs], [p for _, p in pairs]
        # one multi-tensor kernel each instead of two per parameter: the energy model's training
        # step is launch-bound on a GPU
        torch._foreach_mul_(shadows, self.rate)
        torch._foreach_add_(shadows, params, alpha=1.0 - self.rate)

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        for k, p in module.named_parameters():
            if k in self.shadow:
                p.copy_(self.shadow[k])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.shadow = {k: v.clone() for k, v in state.items()}
