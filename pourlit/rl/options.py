"""``SACModule``'s option checks, in one place: each invalid value or combination of its
hyperparameters fails here with a message that names the valid choices, before any file is
read (``check_options``), once the space is known (``check_space``) or once the env is
(``check_replay_capacity``)."""

from __future__ import annotations

from typing import Any

from pourlit.rl.demos import check_demo_labels
from pourlit.rl.returns import VALUE_TARGETS

PRIORS = ("learned", "unit", "none", "zero")
EVAL_MODES = ("sampled", "mean", "best_mean")
SQUASHES = ("tanh", "prior")
BEHAVIOURS = ("policy", "prior_mean")


def check_options(hp: Any) -> None:
    """``hp``: the module's hyperparameters (attribute access)."""
    if hp.prior not in PRIORS:
        raise ValueError(f"prior must be one of {PRIORS}, got {hp.prior!r}")
    if hp.num_envs < 1 or hp.batch_size < 1 or hp.updates_per_transition <= 0:
        raise ValueError("num_envs, batch_size and updates_per_transition must be positive")
    if hp.init_alpha <= 0:
        raise ValueError(f"init_alpha must be > 0, got {hp.init_alpha}")
    if hp.critic_ensemble < 2:
        raise ValueError(f"critic_ensemble must be >= 2, got {hp.critic_ensemble}")
    if hp.q_select < 0 or hp.critic_warmup_updates < 0:
        raise ValueError("q_select and critic_warmup_updates must be >= 0")
    if hp.select_prior_mean and hp.q_select < 1:
        raise ValueError(
            "select_prior_mean adds a candidate to skill selection: needs q_select >= 1"
        )
    if hp.behaviour not in BEHAVIOURS:
        raise ValueError(f"behaviour must be one of {BEHAVIOURS}, got {hp.behaviour!r}")
    if not 0.0 <= hp.behaviour_sample_prob <= 1.0:
        raise ValueError(f"behaviour_sample_prob must be in [0, 1], got {hp.behaviour_sample_prob}")
    if hp.select_margin != 0.0 and not hp.select_prior_mean:
        raise ValueError("select_margin favours the prior's mean skill: needs select_prior_mean")
    if hp.squash not in SQUASHES:
        raise ValueError(f"squash must be one of {SQUASHES}, got {hp.squash!r}")
    if hp.value_target not in VALUE_TARGETS:
        raise ValueError(f"value_target must be one of {VALUE_TARGETS}, got {hp.value_target!r}")
    if hp.eval_mode not in EVAL_MODES:
        raise ValueError(f"eval_mode must be one of {EVAL_MODES}, got {hp.eval_mode!r}")
    if hp.skill_ckpt is not None and hp.action_prior_ckpt is not None:
        raise ValueError("give skill_ckpt (skill space) or action_prior_ckpt (flat), not both")
    if hp.base_ckpt is not None and (
        hp.skill_ckpt or hp.action_prior_ckpt or hp.prior not in ("none", "zero") or hp.prior_init
    ):
        raise ValueError(
            "base_ckpt (residual RL) is SAC on flat residuals: no skill_ckpt or "
            f"action_prior_ckpt, prior none or zero, prior_init false (got prior={hp.prior!r}, "
            f"prior_init={hp.prior_init})"
        )
    if hp.demo_dir is not None and hp.skill_ckpt is None:
        raise ValueError("demo_dir (demonstration transitions) needs a skill_ckpt")
    check_demo_labels(hp.demo_labels)
    if not 0.0 < hp.demo_fraction < 1.0:
        raise ValueError(f"demo_fraction must be in (0, 1), got {hp.demo_fraction}")
    if hp.prior == "zero" and hp.base_ckpt is None:
        raise ValueError("prior='zero' (KL to the zero residual) needs base_ckpt")
    if hp.skill_ckpt is None and hp.action_scale not in (None, 1.0):
        raise ValueError(
            f"flat actions are tanh(u) in [-1, 1]: action_scale must be 1, got {hp.action_scale}"
        )


def check_space(
    space: Any,
    prior: str,
    prior_init: bool,
    select_prior_mean: bool = False,
    behaviour: str = "policy",
) -> None:
    """A learned prior to regularise toward, start from, select the mean of or act with needs
    a space that has one."""
    if space.prior is None and (prior == "learned" or prior_init):
        raise ValueError(
            f"prior={prior!r}, prior_init={prior_init}: needs a learned prior, but no "
            "skill_ckpt or action_prior_ckpt is given (plain SAC: prior none, prior_init false)"
        )
    if space.prior is None and select_prior_mean:
        raise ValueError(
            "select_prior_mean needs a learned prior (skill_ckpt or action_prior_ckpt)"
        )
    if space.prior is None and behaviour != "policy":
        raise ValueError(
            f"behaviour={behaviour!r} acts with the learned prior: needs skill_ckpt or "
            "action_prior_ckpt"
        )


def check_replay_capacity(value_target: str, capacity: int, running: int) -> None:
    """Monte Carlo targets fill in a transition's return when its episode ends, so the replay
    must hold every transition of the ``running`` ones (at most)."""
    if value_target != "td" and capacity < running:
        raise ValueError(
            f"value_target={value_target!r} needs the replay buffer to hold every running "
            f"episode: replay_capacity must be >= {running}, got {capacity}"
        )
