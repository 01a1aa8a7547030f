"""RL with the skill prior (SPiRL's hierarchical SAC): its math as plain torch functions
(``sac.py``), the networks, the rollout callback and the SAC LightningModule."""

from pourlit.rl.module import HierarchicalSACModule, SACModule

__all__ = ["HierarchicalSACModule", "SACModule"]
