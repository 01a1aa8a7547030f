"""SPiRL's networks as plain torch modules (no Lightning): Gaussians, MLPs, encoder, decoders.

Shapes: B = batch, H = skill horizon, d_s = state size, d_a = action size, n_z = latent size.
"""

from __future__ import annotations

import math

import torch
from torch import nn

LOG_SIGMA_MIN, LOG_SIGMA_MAX = -10.0, 2.0
_LOG_2PI = math.log(2.0 * math.pi)


class DiagGaussian:
    """A diagonal Gaussian N(mu, sigma^2) over the last dimension."""

    def __init__(self, mu: torch.Tensor, log_sigma: torch.Tensor) -> None:
        self.mu = mu
        self.log_sigma = log_sigma

    @classmethod
    def from_params(cls, params: torch.Tensor) -> DiagGaussian:
        """Split ``(..., 2 n_z)`` into mu and log_sigma (clamped to [-10, 2])."""
        mu, log_sigma = params.chunk(2, dim=-1)
        return cls(mu, log_sigma.clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX))

    @property
    def sigma(self) -> torch.Tensor:
        return self.log_sigma.exp()

    def rsample(self) -> torch.Tensor:
        """Reparameterised sample ``mu + sigma * eps``."""
        return self.mu + self.sigma * torch.randn_like(self.mu)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Per-dimension log density, same shape as ``x``."""
        return -0.5 * ((x - self.mu) / self.sigma) ** 2 - self.log_sigma - 0.5 * _LOG_2PI

    def kl_to(self, other: DiagGaussian) -> torch.Tensor:
        """Per-dimension KL(self || other)."""
        var_ratio = (self.log_sigma - other.log_sigma).mul(2).exp()
        mean_term = ((self.mu - other.mu) / other.sigma) ** 2
        return 0.5 * (var_ratio + mean_term - 1.0) - (self.log_sigma - other.log_sigma)

    def detach(self) -> DiagGaussian:
        return DiagGaussian(self.mu.detach(), self.log_sigma.detach())


def unit_gaussian_like(x: torch.Tensor) -> DiagGaussian:
    """The fixed prior p(z) = N(0, I) with the shape of ``x``."""
    return DiagGaussian(torch.zeros_like(x), torch.zeros_like(x))


class BlockMLP(nn.Sequential):
    """``Linear(d_in, h) + LeakyReLU(0.2)``, then ``blocks`` x ``[Linear(h, h, bias=False) ->
    BatchNorm1d -> LeakyReLU(0.2)]``, then ``Linear(h, d_out)`` (the reference's
    Predictor/BaseProcessingNet shape; BatchNorm only in the hidden blocks)."""

    def __init__(self, d_in: int, d_out: int, hidden: int = 128, blocks: int = 3) -> None:
        layers: list[nn.Module] = [nn.Linear(d_in, hidden), nn.LeakyReLU(0.2)]
        for _ in range(blocks):
            layers += [nn.Linear(hidden, hidden, bias=False), nn.BatchNorm1d(hidden)]
            layers += [nn.LeakyReLU(0.2)]
        layers.append(nn.Linear(hidden, d_out))
        super().__init__(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (..., d_in) -> (..., d_out); leading dims are flattened for BatchNorm."""
        lead = x.shape[:-1]
        return super().forward(x.reshape(-1, x.shape[-1])).reshape(*lead, -1)


class SkillEncoder(nn.Module):
    """q(z | s_{0..H-1}, a_{0..H-1}): per-step Linear embedding -> LSTM -> Linear(2 n_z).

    The closed-loop encoder sees concat(a_t, s_t); the open-loop one (``state_dim=0``) sees
    actions only. The output is read at the last real step of each window.

    The recurrence is the ``nn.LSTMCell`` equations (gate order input, forget, cell, output)
    with the cell's parameters, ``[i f g o] = W_ih e_t + b_ih + W_hh h_{t-1} + b_hh``,
    ``c_t = sigmoid(f) c_{t-1} + sigmoid(i) tanh(g)``, ``h_t = sigmoid(o) tanh(c_t)`` from
    ``h_0 = c_0 = 0``, but run over the whole window by the one-layer LSTM kernel that
    ``nn.LSTM`` calls (``torch.lstm``), not step by step from Python: the same numbers to
    float rounding, 2.2-2.4x faster forward + backward on the CPU (BENCHMARKS.md). The
    embedding ``e_t = W_e x_t + b_e`` is linear and feeds only the input projection, so the
    two are applied as one map of ``x_t``:
    ``W_ih e_t + b_ih = (W_ih W_e) x_t + (W_ih b_e + b_ih)``, with d_a + d_s inputs per gate
    row (54 on the pouring task) instead of ``hidden``. The parameters stay ``embed``'s and
    ``self.cell``'s, so checkpoints keep their keys.
    """

    def __init__(self, state_dim: int, action_dim: int, n_z: int, hidden: int = 128) -> None:
        super().__init__()
        self.state_dim = state_dim
        self.embed = nn.Linear(action_dim + state_dim, hidden)
        self.cell = nn.LSTMCell(hidden, hidden)
        with torch.no_grad():  # forget-gate bias 1 (gate order: input, forget, cell, output)
            self.cell.bias_ih[hidden : 2 * hidden].fill_(1.0)
            self.cell.bias_hh[hidden : 2 * hidden].fill_(0.0)
        self.head = nn.Linear(hidden, 2 * n_z)

    def forward(
        self, actions: torch.Tensor, states: torch.Tensor | None, mask: torch.Tensor
    ) -> DiagGaussian:
        """``actions`` (B, H, d_a), ``states`` (B, H, d_s) or None, ``mask`` (B, H) -> q."""
        x = actions if self.state_dim == 0 else torch.cat([actions, states], dim=-1)
        c = self.cell
        # e_t = W_e x_t + b_e feeds only the input projection: fold the two Linear maps
        w_ih = c.weight_ih @ self.embed.weight  # (4 hidden, d_a + d_s)
        b_ih = torch.addmv(c.bias_ih, c.weight_ih, self.embed.bias)
        h0 = x.new_zeros(1, x.shape[0], c.hidden_size)  # (layers, B, hidden), also c_0
        weights = (w_ih, c.weight_hh, b_ih, c.bias_hh)
        # lstm(input, (h_0, c_0), weights, has_biases, num_layers, dropout, train,
        #      bidirectional, batch_first) -> (h_{1..H} (B, H, hidden), h_H, c_H)
        out, _, _ = torch.lstm(x, (h0, h0), weights, True, 1, 0.0, self.training, False, True)
        last = (mask.sum(dim=1).long() - 1).clamp(min=0)
        return DiagGaussian.from_params(self.head(out[torch.arange(x.shape[0]), last]))


class ClosedLoopDecoder(nn.Module):
    """a_t = f(s_t, z): the same z for every step of the skill, the current state each step."""

    def __init__(
        self, state_dim: int, action_dim: int, n_z: int, hidden: int = 128, blocks: int = 3
    ) -> None:
        super().__init__()
        self.mlp = BlockMLP(state_dim + n_z, action_dim, hidden, blocks)

    def forward(self, states: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``states`` (..., d_s), ``z`` (..., n_z) broadcastable -> actions (..., d_a)."""
        z = z.expand(*states.shape[:-1], z.shape[-1])
        return self.mlp(torch.cat([states, z], dim=-1))


class OpenLoopDecoder(nn.Module):
    """a_{0..H-1} from z alone: an autoregressive LSTMCell fed (z, a_{t-1})."""

    def __init__(self, action_dim: int, n_z: int, horizon: int, hidden: int = 128) -> None:
        super().__init__()
        self.action_dim = action_dim
        self.horizon = horizon
        self.cell = nn.LSTMCell(n_z + action_dim, hidden)
        self.head = nn.Linear(hidden, action_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` (B, n_z) -> actions (B, H, d_a)."""
        b = z.shape[0]
        hx = z.new_zeros(b, self.cell.hidden_size)
        cx = z.new_zeros(b, self.cell.hidden_size)
        a = z.new_zeros(b, self.action_dim)
        out = []
        for _ in range(self.horizon):
            hx, cx = self.cell(torch.cat([z, a], dim=-1), (hx, cx))
            a = self.head(hx)
            out.append(a)
        return torch.stack(out, dim=1)
