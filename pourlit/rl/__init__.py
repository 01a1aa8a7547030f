"""RL with the skill prior (SPiRL's hierarchical SAC): its math as plain torch functions, the
networks, the rollout callback and the HierarchicalSACModule."""

from pourlit.rl.module import HierarchicalSACModule
from pourlit.rl.policies import TanhGaussianPolicy, TwinCritic
from pourlit.rl.replay import ReplayBuffer
from pourlit.rl.rollout import SkillRolloutCallback
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
from pourlit.rl.select import best_by_q, squashed_samples

__all__ = [
    "HierarchicalSACModule",
    "SkillRolloutCallback",
    "TanhGaussianPolicy",
    "TwinCritic",
    "HLTransitionBuilder",
    "ReplayBuffer",
    "alpha_loss",
    "best_by_q",
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
    "squashed_samples",
]
