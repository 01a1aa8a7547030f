"""Demonstrations as high-level transitions in the replay (RLPD, Ball et al. 2023).

Every demonstration is cut into the windows the agent would have decided on (steps
``[kH, kH + H)``, the last one shorter), and each window becomes one HL transition, as the
agent's own are:

    s_k  = s_{kH}                                    the state the skill starts from
    z_k  = clip(mu_q(s_{kH..kH+H-1}, a_{kH..kH+H-1}), -(1 - 1e-3) m, (1 - 1e-3) m)
                                                     the skill posterior's mean, inside the
                                                     agent's range (-m, m), m = action_scale
    R_k  = sum_{t in window} r_t                     the env's reward, summed over the skill
    s'_k = s_{(k+1)H}  (last window: its last recorded state; the state after the last action
                        is not stored, and only a one-step target of a time-limited demo
                        would bootstrap from it)
    G_k  = sum_{j >= k} gamma^(j - k) R_j            the Monte Carlo return (``value_target``)

``update`` then draws ``demo_fraction`` of every batch from these transitions and the rest
from the agent's own (RLPD's symmetric sampling at 0.5).

Rewards: the files hold the reward the collector's env paid (``dense`` by default, the
staged potential phi(s_{t+1}) of the state after each action). The ``shaped`` reward is its
per-step gain, ``r_t = phi(s_{t+1}) - phi(s_t)``, so the files give it for every step but the
first, whose phi(s_0) is that of a reset state: only the reach term of the potential is
non-zero there (the jaws are open, nothing is lifted, no liquid has moved),
``phi(s_0) = 0.1 (1 - tanh(10 |bottle_grasp - tcp|))`` (``pourlit.sim.task.dense_reward``).
"""

from __future__ import annotations

import contextvars
import math
from pathlib import Path

import numpy as np
import torch

from pourlit.data.rollout import list_rollouts, read_episode
from pourlit.rl.buffer import ReplayBuffer
from pourlit.rl.returns import MC_KEY, discounted_returns
from pourlit.rl.transitions import hl_replay
from pourlit.sim.task import OBS_NAMES
from pourlit.skills.frozen import load_module
from pourlit.skills.module import SkillPriorModule

DEMO_LABELS = ("actions", "expert_actions")  # which recorded actions the encoder reads
_GRASP_OFFSET = [OBS_NAMES.index(f"bottle_grasp_minus_tcp_{a}") for a in "xyz"]


def reset_potential(states: np.ndarray) -> np.ndarray:
    """phi(s) of reset states (..., d_s): ``0.1 (1 - tanh(10 |bottle_grasp - tcp|))``, the only
    non-zero term of the staged potential before the gripper closes."""
    d = np.linalg.norm(states[..., _GRASP_OFFSET], axis=-1)
    return 0.1 * (1.0 - np.tanh(10.0 * d))


def episode_rewards(
    rewards: np.ndarray, states: np.ndarray, stored: str, wanted: str
) -> np.ndarray:
    """The per-step rewards (T,) of an episode recorded with reward mode ``stored``, in mode
    ``wanted``: unchanged when the two agree; ``dense`` -> ``shaped`` as the potential's gain,
    ``r_t = phi_{t+1} - phi_t`` with ``phi_{t+1}`` the stored dense reward and ``phi_0`` the
    reset state's (``reset_potential``)."""
    if stored == wanted:
        return rewards.astype(np.float64)
    if (stored, wanted) != ("dense", "shaped"):
        raise ValueError(
            f"demonstrations recorded with reward {stored!r} cannot give {wanted!r} rewards "
            "(only the same mode, or dense -> shaped)"
        )
    phi = np.concatenate([reset_potential(states[:1]), rewards.astype(np.float64)])
    return np.diff(phi)


@torch.no_grad()
def check_demo_labels(labels: str) -> None:
    """``ValueError`` naming the valid choices unless ``labels`` is one of ``DEMO_LABELS``."""
    if labels not in DEMO_LABELS:
        raise ValueError(f"demo_labels must be one of {DEMO_LABELS}, got {labels!r}")


def demo_transitions(
    data_dir: str | Path,
    skills: torch.nn.Module,
    reward: str,
    gamma: float,
    action_scale: float,
    labels: str = "actions",
) -> dict[str, torch.Tensor]:
    """The HL transitions (module docstring) of every rollout file under ``data_dir``, as
    tensors keyed like the replay buffer's (``obs``, ``z``, ``reward``, ``next_obs``,
    ``terminated``, ``truncated``, ``MC_KEY``), for the closed-loop skill module ``skills``
    (a ``SkillPriorModule``: its encoder, state normalisation and horizon H) and the env's
    ``reward`` mode. ``gamma``: the HL discount of the returns. ``labels``: the actions the
    encoder reads, ``actions`` (executed) or ``expert_actions`` (the expert's intended ones,
    for a skill prior trained on DART labels)."""
    check_demo_labels(labels)
    files = list_rollouts(data_dir)
    if not files:
        raise ValueError(f"{data_dir}: no rollout files (demo_dir)")
    h = int(skills.hparams.horizon)
    rows: dict[str, list[torch.Tensor]] = {
        k: [] for k in ("obs", "z", "reward", "next_obs", "terminated", "truncated", MC_KEY)
    }
    lim = (1.0 - 1e-3) * action_scale
    for path in files:
        ep = read_episode(path)
        acts = ep.actions if labels == "actions" else ep.expert_actions
        if acts is None:
            raise ValueError(f"{path}: no {labels} (demo_labels)")
        t_len = int(ep.pad_mask.sum())
        if t_len < 1:
            continue
        stored = str((ep.attrs.get("env_config") or {}).get("reward", "dense"))
        r = episode_rewards(ep.rewards[:t_len], ep.states[:t_len], stored, reward)
        starts = np.arange(0, t_len, h)
        k = len(starts)
        win = np.minimum(starts[:, None] + np.arange(h), t_len - 1)  # (K, H) step indices
        mask = (starts[:, None] + np.arange(h)) < t_len  # (K, H)
        states = torch.as_tensor(ep.states[:t_len], dtype=torch.float32)
        actions = torch.as_tensor(acts[:t_len], dtype=torch.float32)
        w = torch.as_tensor(win)
        q = skills.encoder(actions[w], skills.normalize(states[w]), torch.as_tensor(mask).float())
        hl_r = torch.as_tensor(np.add.reduceat(r, starts), dtype=torch.float32)  # (K,)
        nxt = np.minimum(starts + h, t_len - 1)
        terminated = torch.zeros(k)
        truncated = torch.zeros(k)
        terminated[-1] = float(bool(ep.terminals[t_len - 1]))
        truncated[-1] = float(bool(ep.truncated[t_len - 1]) and not terminated[-1])
        rows["obs"].append(states[starts])
        rows["z"].append(q.mu.clamp(-lim, lim))
        rows["reward"].append(hl_r)
        rows["next_obs"].append(states[nxt])
        rows["terminated"].append(terminated)
        rows["truncated"].append(truncated)
        rows[MC_KEY].append(discounted_returns(hl_r.double(), gamma).float())
    if not rows["obs"]:
        raise ValueError(f"{data_dir}: the rollout files hold no steps (demo_dir)")
    out = {key: torch.cat(v) for key, v in rows.items()}
    if not math.isfinite(float(out["z"].abs().sum())):
        raise ValueError(f"{data_dir}: the skill encoder gave non-finite latents for the demos")
    return out


def demo_replay(
    skill_ckpt: str,
    data_dir: str | Path,
    reward: str,
    gamma: float,
    action_scale: float,
    labels: str,
    returns: bool,
    device: torch.device | str,
) -> ReplayBuffer:
    """``demo_transitions`` of ``data_dir``, encoded by the skill checkpoint ``skill_ckpt``, in
    a buffer of their own that they fill exactly; with ``returns`` their Monte Carlo returns
    too. The checkpoint loads in a fresh contextvars context (see ``SACModule.__init__``)."""
    load = contextvars.Context().run
    skills = load(load_module, SkillPriorModule, skill_ckpt, "skill").eval()
    rows = demo_transitions(data_dir, skills, reward, gamma, action_scale, labels)
    if not returns:
        rows.pop(MC_KEY)
    state_dim, latent_dim = rows["obs"].shape[1], rows["z"].shape[1]
    buf = hl_replay(state_dim, latent_dim, len(rows["obs"]), device, returns)
    buf.add(rows)
    return buf
