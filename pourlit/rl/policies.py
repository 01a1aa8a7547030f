"""The networks of SAC: the tanh-Gaussian policy (over skills or flat actions) and the twin
critics.

Shapes: B = batch, d_s = state size, n_z = skill (HL action) size.
"""

from __future__ import annotations

import torch
from torch import nn

from pourlit.skills.nets import BlockMLP, DiagGaussian


class TanhGaussianPolicy(nn.Module):
    """pi(u | s) = N(mu(s), sigma(s)^2) over the pre-tanh ``u``; the action is
    ``action_scale * tanh(u)`` (see ``pourlit.rl.sac.squashed_sample``).

    The network is a ``BlockMLP(state_dim, 2 * act_dim, hidden, blocks)`` on normalised
    states ``(s - state_mean) / state_std`` (buffers; identity unless set, e.g. by
    ``from_prior``). Its BatchNorm layers ALWAYS run in eval mode (running statistics fixed,
    whatever ``train()`` says): for a policy copied from the skill prior they keep the prior's
    statistics (SPiRL's PI initialisation), for a fresh one they are fixed affine maps; either
    way acting on a batch of one state works.
    """

    def __init__(
        self,
        state_dim: int,
        act_dim: int,
        hidden: int = 256,
        blocks: int = 3,
        action_scale: float = 2.0,
    ) -> None:
        super().__init__()
        self.state_dim, self.act_dim, self.action_scale = state_dim, act_dim, action_scale
        self.net = BlockMLP(state_dim, 2 * act_dim, hidden, blocks)
        self.register_buffer("state_mean", torch.zeros(state_dim))
        self.register_buffer("state_std", torch.ones(state_dim))
        self.train()

    @classmethod
    def from_prior(cls, skill_prior: nn.Module, action_scale: float = 2.0) -> TanhGaussianPolicy:
        """A policy that starts as an exact copy of the learned prior q_hat(z | s).

        ``skill_prior``: a ``pourlit.skills.SkillPrior`` (``.prior`` BlockMLP, ``.state_mean``,
        ``.state_std``, ``.state_dim``, ``.latent_dim``). Copies the weights and BatchNorm
        statistics of q_hat and its state normalisation, so ``policy(s)`` and
        ``skill_prior.prior_dist(s)`` give the same Gaussian at initialisation.
        """
        prior: nn.Sequential = skill_prior.prior
        hidden, blocks = _block_shape(prior)
        policy = cls(skill_prior.state_dim, skill_prior.latent_dim, hidden, blocks, action_scale)
        policy.net.load_state_dict(prior.state_dict())
        policy.state_mean.copy_(skill_prior.state_mean)
        policy.state_std.copy_(skill_prior.state_std)
        return policy

    def train(self, mode: bool = True) -> TanhGaussianPolicy:
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()  # frozen statistics
        return self

    def forward(self, states: torch.Tensor) -> DiagGaussian:
        """Raw states (B, d_s) -> pi(u | s), parameters (B, n_z)."""
        return DiagGaussian.from_params(self.net((states - self.state_mean) / self.state_std))


def _block_shape(mlp: nn.Sequential) -> tuple[int, int]:
    """(hidden, blocks) of a ``BlockMLP``."""
    return mlp[0].out_features, sum(isinstance(m, nn.BatchNorm1d) for m in mlp)


def initial_policy(space: nn.Module, from_prior: bool, hidden: int) -> TanhGaussianPolicy:
    """The policy before training, acting in ``space`` (``pourlit.rl.spaces``): an exact copy
    of the space's learned prior (``from_prior``: SPiRL's PI initialisation), else fresh
    weights in the prior's architecture (where there is no prior: ``hidden`` wide, 2 blocks)
    with the space's state normalisation."""
    if from_prior:
        return TanhGaussianPolicy.from_prior(space, space.action_scale)
    hidden, blocks = (hidden, 2) if space.prior is None else _block_shape(space.prior)
    policy = TanhGaussianPolicy(
        space.state_dim, space.latent_dim, hidden, blocks, space.action_scale
    )
    policy.state_mean.copy_(space.state_mean)
    policy.state_std.copy_(space.state_std)
    return policy


class TwinCritic(nn.Module):
    """``n`` independent Q networks ``Q_j(s, a)`` (two: SAC's twin critics; more: an ensemble
    whose minimum is more pessimistic where the networks disagree, which is where a policy
    following their gradient finds their errors, as in REDQ and RLPD): MLPs (``layers``
    hidden layers of ``hidden`` units, ReLU; with ``layer_norm`` a LayerNorm after each hidden
    Linear, as in RLPD) on ``concat(s, a)``, or with ``state_norm = (mean, std)`` on
    ``concat((s - mean) / std, a)`` (the skill prior's state statistics: the raw state mixes
    metres, radians and fractions, e.g. the cup-to-mouth offset that decides a pour varies by
    centimetres). The networks are attributes ``q1`` ... ``qn``."""

    def __init__(
        self,
        state_dim: int,
        act_dim: int,
        hidden: int = 256,
        layers: int = 2,
        state_norm: tuple[torch.Tensor, torch.Tensor] | None = None,
        n: int = 2,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"TwinCritic: layers must be >= 1, got {layers}")
        if n < 2:
            raise ValueError(f"TwinCritic: needs n >= 2 critics, got {n}")
        self.normalise = state_norm is not None
        if state_norm is not None:  # buffers only then: older checkpoints' critics have none
            self.register_buffer("state_mean", state_norm[0].clone().reshape(state_dim))
            self.register_buffer("state_std", state_norm[1].clone().reshape(state_dim))

        def mlp() -> nn.Sequential:
            mods: list[nn.Module] = []
            for i in range(layers):
                mods.append(nn.Linear(state_dim + act_dim if i == 0 else hidden, hidden))
                mods += [nn.LayerNorm(hidden), nn.ReLU()] if layer_norm else [nn.ReLU()]
            mods.append(nn.Linear(hidden, 1))
            return nn.Sequential(*mods)

        self.n = n
        for j in range(1, n + 1):
            setattr(self, f"q{j}", mlp())

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``states`` (B, d_s), ``actions`` (B, n_z) -> (Q_1 (B,), ..., Q_n (B,))."""
        if self.normalise:
            states = (states - self.state_mean) / self.state_std
        x = torch.cat([states, actions], dim=-1)
        return tuple(getattr(self, f"q{j}")(x).squeeze(-1) for j in range(1, self.n + 1))
