"""Gaussian MLP policy with a state-independent log-std and observation normalisation.

π(a|s) = N(μ_θ(s), diag(exp(2·log_std))), μ_θ a tanh MLP applied to normalised
observations. The normaliser's running statistics are buffers, so they are part of
`state_dict` and are copied with the policy (an adapted policy shares the meta-policy's
normalisation, SPEC §2.4).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


class ObsNormalizer(nn.Module):
    """Running mean/std of observations (parallel Welford update), clipped output."""

    def __init__(self, dim: int, clip: float = 10.0, eps: float = 1e-8) -> None:
        super().__init__()
        self.clip, self.eps = clip, eps
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(dim, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, obs: np.ndarray | torch.Tensor) -> None:
        x = torch.as_tensor(obs, dtype=torch.float64, device=self.mean.device).reshape(-1, self.mean.numel())
        n = x.shape[0]
        if n == 0:
            return
        b_mean, b_var = x.mean(0), x.var(0, unbiased=False)
        tot = self.count + n
        delta = b_mean - self.mean
        m2 = self.var * self.count + b_var * n + delta**2 * self.count * n / tot
        self.mean.copy_(self.mean + delta * n / tot)
        self.var.copy_(m2 / tot)
        self.count.copy_(tot)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        std = torch.sqrt(self.var + self.eps).to(obs.dtype)
        return torch.clamp((obs - self.mean.to(obs.dtype)) / std, -self.clip, self.clip)


def mlp(sizes: list[int], activation: type[nn.Module] = nn.Tanh) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class GaussianHead(nn.Module):
    """log π(a|s) and sampling for a module whose forward gives (mean, log_std)."""

    def log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        mean, log_std = self(obs)
        return gaussian_log_prob(mean, log_std, act)

    @torch.no_grad()
    def sample(self, obs: np.ndarray, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Actions and their log-probabilities for raw observations (CPU); any leading shape."""
        mean, log_std = self(torch.as_tensor(obs, dtype=torch.float32))
        act = mean + torch.randn(mean.shape, generator=generator, dtype=mean.dtype) * log_std.exp()
        return act.numpy(), gaussian_log_prob(mean, log_std, act).numpy()


class GaussianPolicy(GaussianHead):
    """Diagonal Gaussian policy: tanh MLP mean, state-independent log-std."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: list[int] | tuple[int, ...] = (64, 64),
        init_log_std: float = 0.0,
    ) -> None:
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.normalizer = ObsNormalizer(obs_dim)
        self.mean_net = mlp([obs_dim, *hidden, act_dim])
        last = self.mean_net[-1]
        assert isinstance(last, nn.Linear)
        with torch.no_grad():  # small last layer: initial actions near zero (CleanRL / PPO habit)
            last.weight.mul_(0.01)
            last.bias.zero_()
        self.log_std = nn.Parameter(torch.full((act_dim,), float(init_log_std)))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.mean_net(self.normalizer(obs))
        log_std = torch.clamp(self.log_std, LOG_STD_MIN, LOG_STD_MAX).expand_as(mean)
        return mean, log_std

    def flat_params(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.parameters()])

    def set_flat_params(self, flat: torch.Tensor) -> None:
        i = 0
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(flat[i : i + p.numel()].view_as(p))
                i += p.numel()


def gaussian_log_prob(mean: torch.Tensor, log_std: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    z = (act - mean) / log_std.exp()
    return (-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def gaussian_kl(
    mean_p: torch.Tensor, log_std_p: torch.Tensor, mean_q: torch.Tensor, log_std_q: torch.Tensor
) -> torch.Tensor:
    """KL(N_p ‖ N_q) per row, summed over action dimensions (closed form)."""
    var_p, var_q = (2 * log_std_p).exp(), (2 * log_std_q).exp()
    kl = log_std_q - log_std_p + (var_p + (mean_p - mean_q) ** 2) / (2 * var_q) - 0.5
    return kl.sum(-1)


class StackedGaussian(GaussianHead):
    """T Gaussian policies of one architecture evaluated as one batched network.

    Layer weights are stacked to (T, in, out) and applied with `baddbmm` to observations
    shaped (T, n, d), so the projections of a whole meta-batch (SPEC §2.4 step 3) run as
    one optimisation: the loss is a sum over tasks and Adam is elementwise, so each task's
    parameters follow exactly the trajectory they would follow alone.
    """

    def __init__(self, policies: list[GaussianPolicy]) -> None:
        super().__init__()
        self.normalizer = copy.deepcopy(policies[0].normalizer)
        layers = [[m for m in p.mean_net if isinstance(m, nn.Linear)] for p in policies]
        n_layers = len(layers[0])
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.stack([ls[i].weight.detach().T for ls in layers])) for i in range(n_layers)]
        )
        self.biases = nn.ParameterList(
            [nn.Parameter(torch.stack([ls[i].bias.detach()[None] for ls in layers])) for i in range(n_layers)]
        )
        self.log_std = nn.Parameter(torch.stack([p.log_std.detach()[None] for p in policies]))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.normalizer(obs)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(b, x, w)
            if i < len(self.weights) - 1:
                x = torch.tanh(x)
        log_std = torch.clamp(self.log_std, LOG_STD_MIN, LOG_STD_MAX).expand_as(x)
        return x, log_std

    @torch.no_grad()
    def unstack(self, template: GaussianPolicy) -> list[GaussianPolicy]:
        """One `GaussianPolicy` per task (copies of `template` with the stacked parameters)."""
        out = []
        for t in range(self.log_std.shape[0]):
            pol = copy.deepcopy(template)
            linears = [m for m in pol.mean_net if isinstance(m, nn.Linear)]
            for lin, w, b in zip(linears, self.weights, self.biases):
                lin.weight.copy_(w[t].T)
                lin.bias.copy_(b[t, 0])
            pol.log_std.copy_(self.log_std[t, 0])
            out.append(pol)
        return out
