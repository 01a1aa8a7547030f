"""RL with the skill prior (SPiRL's hierarchical SAC): its math as plain torch functions."""

from pourlit.rl.replay import ReplayBuffer
from pourlit.rl.sac import (
    HLTransitionBuilder,
    alpha_loss,
    critic_loss,
    critic_target,
    entropy_alpha_loss,
    hl_transitions,
    policy_loss,
    polyak_update,
    prior_divergence,
    sac_policy_loss,
    squashed_log_prob,
    squashed_sample,
)

__all__ = [
    "HLTransitionBuilder",
    "ReplayBuffer",
    "alpha_loss",
    "critic_loss",
    "critic_target",
    "entropy_alpha_loss",
    "hl_transitions",
    "policy_loss",
    "polyak_update",
    "prior_divergence",
    "sac_policy_loss",
    "squashed_log_prob",
    "squashed_sample",
]
