"""Residual RL on a trained agent (pourlit.rl.residual): the residual space's actions, the env
that carries the base's action, the zero-residual start, checkpoints that rebuild without the
base's file, and the ``configs/rl/residual.yaml`` run through ``pourlit fit`` / ``evaluate``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pourlit.cli import main
from pourlit.rl import SACModule
from pourlit.rl.acting import AgentPolicy
from pourlit.sim.env import EnvConfig, PouringVecEnv
from pourlit.sim.episodes import run_episodes
from pourlit.sim.task import OBS_DIM

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "checkpoints/rl/default.ckpt"


def _residual(base: Path = BASE, **kw) -> SACModule:
    args = dict(
        base_ckpt=str(base),
        prior="none",
        prior_init=False,
        num_envs=2,
        env={"max_episode_steps": 30},
        warmup_transitions=8,
        batch_size=16,
        critic_hidden=32,
        eval_episodes=2,
    )
    return SACModule(**(args | kw))


def test_residual_space_sizes_and_low_level_by_hand() -> None:
    m = _residual(residual_scale=0.25)
    sp = m.space
    assert (sp.state_dim, sp.latent_dim, sp.horizon, sp.action_scale) == (OBS_DIM + 7, 7, 1, 1.0)
    assert sp.prior is None and sp.base.selecting  # the base acts as trained: skills by Q
    x = torch.zeros(3, OBS_DIM + 7)
    x[:, -7:] = torch.tensor([0.9, -0.9, 0.0, 0.5, -1.0, 1.0, 0.1])
    r = torch.tensor([1.0, -1.0, 0.4, -0.4, 1.0, 1.0, 0.0]).expand(3, 7)
    want = torch.tensor([1.0, -1.0, 0.1, 0.4, -0.75, 1.0, 0.1]).expand(3, 7)
    torch.testing.assert_close(sp.low_level(x, r), want)
    assert not any(p.requires_grad for p in sp.base.parameters())
    # the residual policy starts at r = 0 for every state, sigma 0.3
    d = m.policy(torch.randn(5, OBS_DIM + 7))
    assert torch.equal(d.mu, torch.zeros(5, 7))
    torch.testing.assert_close(d.sigma, torch.full((5, 7), 0.3))


def test_fresh_residual_agent_acts_exactly_as_its_base() -> None:
    """Mean residual 0: the residual agent's episodes are the base agent's, bit for bit (same
    seeds, the base drawing its skills from the same generator)."""
    m = _residual()
    env = m._make_env()
    pol = AgentPolicy(m, 2, "mean", 7)
    got = run_episodes(env, pol, pol.begin, 4, 7, progress=False)
    base = m.space.base
    with PouringVecEnv(EnvConfig.merged(base.space.env_config, m.hparams.env, num_envs=2)) as e:
        ref = AgentPolicy(base, 2, "sampled", 7)
        want = run_episodes(e, ref, ref.begin, 4, 7, progress=False)
    env.close()
    assert got["mean_return"] == want["mean_return"] and got["episodes"] == want["episodes"] == 4
    assert got["mean_poured_fraction"] == want["mean_poured_fraction"]


def test_residual_env_observations_carry_the_base_action() -> None:
    m = _residual(env={"max_episode_steps": 5})
    env = m._make_env()
    x = env.reset(seed=3)
    assert env.obs_dim == x.shape[1] == OBS_DIM + 7 and torch.equal(
        x[:, :OBS_DIM], torch.as_tensor(np.asarray(env._obs))
    )
    ended = False
    for _ in range(6):
        a = m.space.low_level(x, torch.zeros(2, 7))
        x, _, term, trunc, info = env.step(a)
        assert x.shape == (2, OBS_DIM + 7) and x[:, -7:].abs().max() <= 1.0
        if (term | trunc).any():
            assert info["final_obs"].shape == (2, OBS_DIM + 7)
            ended = True
    assert ended
    env.close()


def test_residual_checkpoint_rebuilds_without_the_base_file(tmp_path: Path) -> None:
    base = tmp_path / "base.ckpt"
    shutil.copy(BASE, base)
    run = tmp_path / "run"
    args = ["fit", "-c", str(ROOT / "configs/rl/residual.yaml"), "--run_dir", str(run)]
    args += ["--trainer.max_steps", "6", "--trainer.enable_progress_bar", "false"]
    args += ["--model.init_args.base_ckpt", str(base), "--model.init_args.batch_size", "8"]
    args += ["--model.init_args.warmup_transitions", "10", "--model.init_args.critic_hidden", "32"]
    args += ["--model.init_args.env", json.dumps({"max_episode_steps": 20})]
    assert main(args) == 0
    last = run / "checkpoints/last.ckpt"
    trained = torch.load(last, map_location="cpu", weights_only=False)
    assert trained["global_step"] == 6
    base.unlink()  # the residual checkpoint holds the base's weights
    report = tmp_path / "eval.json"
    cmd = ["evaluate", "--ckpt", str(last), "--episodes", "2", "-q", "--json", str(report)]
    assert main(cmd) == 0
    result = json.loads(report.read_text())
    assert result["policy"] == "residual_sac (sampled)" and result["episodes"] == 2
    assert result["episode_length"] <= 20
    loaded = SACModule.load_from_checkpoint(last, map_location="cpu")
    assert loaded.space.base.selecting  # base_updates restored: the base still selects by Q
    sd = loaded.state_dict()
    for k, v in trained["state_dict"].items():
        assert torch.equal(sd[k], v), k


def test_zero_prior_is_the_fresh_residual_policy() -> None:
    """prior="zero": KL(pi || N(0, 0.3^2)) is 0 for the fresh residual policy and grows as
    its mean leaves 0 (by hand: mu^2 / (2 * 0.09) per dimension)."""
    from pourlit.rl.update import regulariser

    m = _residual(prior="zero", init_alpha=1.0)
    s = torch.randn(4, OBS_DIM + 7)
    pi = m.policy(s)
    torch.testing.assert_close(regulariser(m, pi, None, s), torch.zeros(4))
    with torch.no_grad():
        m.policy.net[-1].bias[:7] += 0.3
    kl = regulariser(m, m.policy(s), None, s)
    torch.testing.assert_close(kl, torch.full((4,), 7 * 0.09 / 0.18))
    assert float(m.log_alpha.exp()) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"skill_ckpt": str(ROOT / "checkpoints/skills/spirl_cl.ckpt")}, "base_ckpt"),
        ({"prior": "learned"}, "prior none or zero"),
        ({"prior_init": True}, "prior_init false"),
        ({"init_alpha": 0.0}, "init_alpha must be > 0"),
        ({"residual_scale": 0.0}, "residual_scale must be in"),
    ],
)
def test_bad_residual_options_fail_with_a_message(kw: dict, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        _residual(**kw)


def test_zero_prior_needs_a_base() -> None:
    with pytest.raises(ValueError, match="needs base_ckpt"):
        SACModule(prior="zero", prior_init=False)


def test_missing_base_checkpoint_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.ckpt: RL checkpoint not found"):
        _residual(base=tmp_path / "nope.ckpt")


def test_base_generator_is_seeded_by_reset() -> None:
    m = _residual()
    env = m._make_env()
    a = env.reset(seed=11)
    z_a = env.base.z.clone()
    env.reset(seed=11)
    assert torch.equal(env.base.z, z_a) and torch.equal(a, env.reset(seed=11))
    assert np.array_equal(env.base.clock, np.ones(2, dtype=np.int64))
    env.close()


def test_policy_lr_is_the_policy_optimizers_alone() -> None:
    m = _residual(lr=3e-4, policy_lr=1e-5)
    opt_pi, opt_q, opt_alpha = m.configure_optimizers()
    assert opt_pi.param_groups[0]["lr"] == 1e-5
    assert opt_q.param_groups[0]["lr"] == opt_alpha.param_groups[0]["lr"] == 3e-4
