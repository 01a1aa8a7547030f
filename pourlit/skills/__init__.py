"""Learning from the demonstrations: SPiRL's skill prior (networks, losses, SkillPriorModule)
and the flat baselines' one-step action prior (ActionPriorModule)."""

from pourlit.skills.action_prior import ActionPrior, ActionPriorModule, load_action_prior
from pourlit.skills.module import SkillPrior, SkillPriorModule, load_skill_prior

__all__ = [
    "ActionPrior",
    "ActionPriorModule",
    "SkillPrior",
    "SkillPriorModule",
    "load_action_prior",
    "load_skill_prior",
]
