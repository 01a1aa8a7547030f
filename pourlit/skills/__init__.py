"""Skill-prior learning (SPiRL): networks, losses and the SkillPriorModule."""

from pourlit.skills.module import SkillPrior, SkillPriorModule, load_skill_prior

__all__ = ["SkillPrior", "SkillPriorModule", "load_skill_prior"]
