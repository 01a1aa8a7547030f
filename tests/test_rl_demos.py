"""Demonstrations as HL transitions in the RL stage (pourlit.rl.demos, SACModule's ``demo_dir``):
the reward conversion checked against the env itself, the windows, returns and latents of the
transitions, the batch mix, and the one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pourlit.data.rollout import write_episode
from pourlit.expert.pour import ScriptedPourExpert
from pourlit.rl import SACModule
from pourlit.rl.demos import demo_transitions, episode_rewards
from pourlit.rl.returns import MC_KEY, discounted_returns
from pourlit.sim.env import EnvConfig, PouringVecEnv
from pourlit.skills.frozen import load_module
from pourlit.skills.module import SkillPriorModule

ROOT = Path(__file__).resolve().parents[1]
SKILL_CKPT = ROOT / "checkpoints/skills/spirl_cl.ckpt"


def _expert_episode(reward: str, steps: int, actions: np.ndarray | None = None):
    """States, actions and rewards of ``steps`` expert steps (or of the given actions) from the
    reset with seed 7, in an env paying ``reward``."""
    env = PouringVecEnv(EnvConfig.merged({"reward": reward, "max_episode_steps": 400}, num_envs=1))
    expert = ScriptedPourExpert(env, seed=0)
    obs = env.reset(seed=7)
    expert.begin()
    states, acts, rewards = [], [], []
    for t in range(steps):
        a = expert.act() if actions is None else actions[t : t + 1]
        states.append(obs[0].numpy())
        obs, r, *_ = env.step(a)
        acts.append(np.asarray(a, np.float32)[0])
        rewards.append(float(r[0]))
    env.close()
    return np.stack(states), np.stack(acts), np.array(rewards)


def test_shaped_rewards_from_dense_files_match_the_env() -> None:
    """The files hold dense rewards; the RL env pays shaped ones. Converted rewards equal what
    a shaped env pays for the same actions from the same reset, step for step, including the
    first (the reset state's potential)."""
    states, actions, dense = _expert_episode("dense", 150)
    _, _, shaped = _expert_episode("shaped", 150, actions)
    assert dense[-1] > 0.3  # the expert grasped and lifted: the potential's stages are covered
    got = episode_rewards(dense, states, "dense", "shaped")
    np.testing.assert_allclose(got, shaped, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(episode_rewards(dense, states, "dense", "dense"), dense)
    with pytest.raises(ValueError, match="recorded with reward 'sparse' cannot give 'shaped'"):
        episode_rewards(dense, states, "sparse", "shaped")


def _write_demos(root: Path, lengths: tuple[int, ...], seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    eps = []
    for i, t in enumerate(lengths):
        ep = {
            "states": rng.normal(0, 0.3, (t, 50)).astype(np.float32),
            "actions": rng.uniform(-1, 1, (t, 7)).astype(np.float32),
            "rewards": rng.uniform(0, 1, t).astype(np.float32),
            "terminals": np.arange(t) == t - 1,
        }
        write_episode(root / f"rollout_{i:05d}.h5", **ep, success=True, attrs={"seed": i})
        eps.append(ep)
    return eps


def test_demo_transitions_cut_windows_sum_rewards_and_hold_returns(tmp_path: Path) -> None:
    eps = _write_demos(tmp_path, (23, 10))
    skills = load_module(SkillPriorModule, SKILL_CKPT, "skill").eval()
    h = int(skills.hparams.horizon)
    assert h == 10
    out = demo_transitions(tmp_path, skills, "dense", 0.9, 2.0)
    assert set(out) == {"obs", "z", "reward", "next_obs", "terminated", "truncated", MC_KEY}
    assert out["obs"].shape == (3 + 1, 50) and out["z"].shape == (4, skills.hparams.latent_dim)
    e0 = eps[0]
    np.testing.assert_array_equal(out["obs"][:3].numpy(), e0["states"][[0, 10, 20]])
    np.testing.assert_array_equal(out["next_obs"][:3].numpy(), e0["states"][[10, 20, 22]])
    sums = [e0["rewards"][0:10].sum(), e0["rewards"][10:20].sum(), e0["rewards"][20:].sum()]
    np.testing.assert_allclose(out["reward"][:3].numpy(), sums, rtol=1e-5)
    np.testing.assert_allclose(out["reward"][3].item(), eps[1]["rewards"].sum(), rtol=1e-5)
    assert out["terminated"].tolist() == [0.0, 0.0, 1.0, 1.0] and not out["truncated"].any()
    torch.testing.assert_close(out[MC_KEY][:3], discounted_returns(out["reward"][:3], 0.9))
    # z: the posterior mean of each window (the last one masked to its 3 steps), clipped
    with torch.no_grad():
        s = torch.as_tensor(e0["states"][20:23])[None]
        a = torch.as_tensor(e0["actions"][20:23])[None]
        pad = lambda x: torch.cat([x, x[:, -1:].expand(1, 7, x.shape[-1])], 1)  # noqa: E731
        mask = torch.tensor([[1.0] * 3 + [0.0] * 7])
        mu = skills.encoder(pad(a), skills.normalize(pad(s)), mask).mu
    torch.testing.assert_close(out["z"][2], mu[0].clamp(-1.998, 1.998))
    assert out["z"].abs().max() < 2.0


def test_demo_errors_name_the_folder(tmp_path: Path) -> None:
    skills = load_module(SkillPriorModule, SKILL_CKPT, "skill").eval()
    with pytest.raises(ValueError, match=f"{tmp_path}: no rollout files"):
        demo_transitions(tmp_path, skills, "shaped", 0.99, 2.0)
    _write_demos(tmp_path, (12,))
    with pytest.raises(ValueError, match="no expert_actions"):
        demo_transitions(tmp_path, skills, "dense", 0.99, 2.0, labels="expert_actions")
    with pytest.raises(ValueError, match="demo_dir .* needs a skill_ckpt"):
        SACModule(demo_dir=str(tmp_path), prior="none", prior_init=False)
    with pytest.raises(ValueError, match="demo_labels must be one of"):
        SACModule(skill_ckpt=str(SKILL_CKPT), demo_dir=str(tmp_path), demo_labels="intended")
    with pytest.raises(ValueError, match="demo_labels must be one of"):
        demo_transitions(tmp_path, skills, "dense", 0.99, 2.0, labels="intended")
    with pytest.raises(ValueError, match="demo_fraction must be in"):
        SACModule(skill_ckpt=str(SKILL_CKPT), demo_dir=str(tmp_path), demo_fraction=1.0)
