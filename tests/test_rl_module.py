"""SACModule, its networks, rollout callback and the ``pourlit fit`` RL config
(docs/algorithm.md section 2; pourlit.rl.module, pourlit.rl.policies, pourlit.rl.rollout)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from torch import nn

from pourlit.cli import main
from pourlit.rl import SACModule
from pourlit.rl.policies import TanhGaussianPolicy, TwinCritic
from pourlit.skills.module import SkillPriorModule, load_skill_prior

ROOT = Path(__file__).resolve().parents[1]
SKILL_CKPT = ROOT / "checkpoints/skills/spirl_cl.ckpt"


def _states(skills, n: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return skills.state_mean + skills.state_std * torch.randn(n, skills.state_dim, generator=g)


def _small_module(**kw) -> SACModule:
    args = dict(
        skill_ckpt=str(SKILL_CKPT),
        num_envs=2,
        env={"max_episode_steps": 30},
        warmup_transitions=8,
        batch_size=16,
        eval_episodes=2,
    )
    args.update(kw)
    return SACModule(**args)


def _trainer(tmp_path: Path, **kw) -> L.Trainer:
    args = dict(
        accelerator="cpu",
        max_steps=20,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_train_batches=1000,
        limit_val_batches=1,
        default_root_dir=str(tmp_path),
    )
    args.update(kw)
    return L.Trainer(**args)


def test_pi_init_copies_prior_and_batchnorm_stays_frozen() -> None:
    skills = load_skill_prior(SKILL_CKPT)
    policy = TanhGaussianPolicy.from_prior(skills, action_scale=2.0)
    policy.train()
    bns = [m for m in policy.modules() if isinstance(m, nn.BatchNorm1d)]
    assert bns and all(not m.training for m in bns)
    stats = [m.running_mean.clone() for m in bns]
    s = _states(skills)
    pi, q = policy(s), skills.prior_dist(s)
    torch.testing.assert_close(pi.mu, q.mu, rtol=0, atol=0)
    torch.testing.assert_close(pi.log_sigma, q.log_sigma, rtol=0, atol=0)
    pi.mu.sum().backward()  # training-mode forward/backward leaves the statistics alone
    for m, before in zip(bns, stats, strict=True):
        assert torch.equal(m.running_mean, before)
    assert policy(s[:1]).mu.shape == (1, skills.latent_dim)  # a single state works


def test_twin_critic_shapes() -> None:
    critic = TwinCritic(5, 3, hidden=16, layers=3)
    q1, q2 = critic(torch.randn(4, 5), torch.randn(4, 3))
    assert q1.shape == q2.shape == (4,)
    assert not torch.equal(q1, q2)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in critic.modules())
    # the twin critics keep their names, so older checkpoints load
    assert {k.split(".")[0] for k in critic.state_dict()} == {"q1", "q2"}


def test_critic_ensemble_with_layer_norm() -> None:
    critic = TwinCritic(5, 3, hidden=16, layers=2, n=5, layer_norm=True)
    qs = critic(torch.randn(4, 5), torch.randn(4, 3))
    assert len(qs) == 5 and all(q.shape == (4,) for q in qs)
    assert len({q.sum().item() for q in qs}) == 5  # independently initialised
    assert sum(isinstance(m, nn.LayerNorm) for m in critic.modules()) == 5 * 2
    with pytest.raises(ValueError, match="needs n >= 2 critics, got 1"):
        TwinCritic(5, 3, n=1)
    m = _small_module(critic_ensemble=4, critic_layer_norm=True)
    assert len(m.critic(torch.randn(2, m.space.state_dim), torch.randn(2, 10))) == 4
    assert m.critic_target.n == 4
    with pytest.raises(ValueError, match="critic_ensemble must be >= 2, got 1"):
        _small_module(critic_ensemble=1)


def test_ssp_mode_uses_unit_gaussian_and_no_prior_init() -> None:
    from pourlit.rl.update import divergence_target

    m = _small_module(prior="unit", prior_init=False)
    s = _states(m.space, 8)
    d = divergence_target(m, s)
    assert torch.equal(d.mu, torch.zeros(8, m.space.latent_dim))
    assert torch.equal(d.log_sigma, torch.zeros(8, m.space.latent_dim))
    assert not torch.allclose(m.policy(s).mu, m.space.prior_dist(s).mu)
    learned = _small_module()
    torch.testing.assert_close(divergence_target(learned, s).mu, learned.space.prior_dist(s).mu)
    torch.testing.assert_close(learned.policy(s).mu, learned.space.prior_dist(s).mu)


def test_mismatched_skill_checkpoint_fails_before_training(tmp_path: Path) -> None:
    from pourlit.sim.env import EnvConfig

    skill = SkillPriorModule(
        state_dim=10,
        action_dim=7,
        horizon=5,
        latent_dim=4,
        hidden=32,
        prior_blocks=1,
        decoder_blocks=1,
        env_config=EnvConfig(max_episode_steps=30).to_dict(),
    )
    ckpt = tmp_path / "skill10.ckpt"
    torch.save(
        {
            "state_dict": skill.state_dict(),
            "hyper_parameters": dict(skill.hparams),
            "pytorch-lightning_version": L.__version__,
        },
        ckpt,
    )
    m = SACModule(str(ckpt), warmup_transitions=4, batch_size=4)
    with pytest.raises(ValueError, match=r"skill10\.ckpt.*10/7.*50/7"):
        _trainer(tmp_path).fit(m)
    assert m.env_steps == 0 and len(m.replay) == 0


def test_smoke_fit_updates_everything_and_checkpoints_the_replay(tmp_path: Path) -> None:
    torch.manual_seed(0)
    m = _small_module()
    log_alpha0 = m.log_alpha.detach().clone()
    target0 = [p.clone() for p in m.critic_target.parameters()]
    trainer = _trainer(tmp_path, max_steps=20)
    trainer.fit(m)
    assert trainer.global_step == 20 and m.updates == 20  # global_step = HL updates
    assert len(m.replay) >= 8 + 20 - 1 and m.env_steps > 0
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    for k in ("train/policy_loss", "train/critic_loss", "train/alpha_loss", "train/divergence"):
        assert torch.isfinite(torch.tensor(metrics[k])), k
    assert metrics["env_steps"] == m.env_steps
    assert not torch.equal(m.log_alpha.detach(), log_alpha0)
    moved = [
        not torch.equal(p, p0) for p, p0 in zip(m.critic_target.parameters(), target0, strict=True)
    ]
    assert all(moved)
    differ = [
        not torch.equal(p, q)
        for p, q in zip(m.critic_target.parameters(), m.critic.parameters(), strict=True)
    ]
    assert all(differ)

    path = tmp_path / "rl.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    state = ckpt["pourlit_rl"]
    assert state["replay"]["size"] == len(m.replay)
    assert state["env_steps"] == m.env_steps and state["episodes"] == m.episodes
    loaded = SACModule.load_from_checkpoint(path)
    assert len(loaded.replay) == len(m.replay)
    torch.testing.assert_close(loaded.replay.data["obs"], m.replay.data["obs"])
    torch.testing.assert_close(loaded.log_alpha, m.log_alpha)

    # validation: deterministic evaluation rollouts on a held-out seed
    out = _trainer(tmp_path).validate(m, verbose=False)[0]
    assert set(out) >= {"val/success_rate", "val/poured_fraction", "val/return"}

    # pourlit evaluate recognises the RL checkpoint (it records its kind; a skill checkpoint
    # written before kinds were recorded is recognised by its hyperparameters) and rolls it out
    from pourlit.checkpoints import checkpoint_kind
    from pourlit.cli import main as cli_main

    assert torch.load(path, map_location="cpu", weights_only=False)["pourlit_kind"] == "rl"
    legacy = torch.load(SKILL_CKPT, map_location="cpu", weights_only=False)
    assert legacy.pop("pourlit_kind") == "skill"
    torch.save(legacy, tmp_path / "legacy_skill.ckpt")
    assert (
        checkpoint_kind(path) == "rl" and checkpoint_kind(tmp_path / "legacy_skill.ckpt") == "skill"
    )
    report = tmp_path / "eval.json"
    assert (
        cli_main(["evaluate", "--ckpt", str(path), "--episodes", "2", "-q", "--json", str(report)])
        == 0
    )
    result = json.loads(report.read_text())
    # default: sampled skills as the headline, the mean skill beside it on the same seeds
    assert result["policy"] == "hierarchical_sac (sampled)" and result["episodes"] == 2
    assert result["mean_skill"]["episodes"] == 2
    assert result["episode_length"] <= 30  # the module's env override (max_episode_steps 30)
    cmd = ["evaluate", "--ckpt", str(path), "--episodes", "2", "-q", "--mode", "mean"]
    assert cli_main([*cmd, "--json", str(report)]) == 0
    mean = json.loads(report.read_text())
    assert mean["policy"] == "hierarchical_sac (mean skill)" and "mean_skill" not in mean
    assert mean["mean_return"] == result["mean_skill"]["mean_return"]  # same seeds, same skills
    assert mean["mean_return"] != result["mean_return"]  # other skills, other episodes


@pytest.mark.parametrize("config", ["spirl_cl", "ssp", "default", "prior_select"])
def test_cli_fit_rl_config(tmp_path: Path, config: str) -> None:
    run = tmp_path / "run"
    args = [
        "fit",
        "-c",
        str(ROOT / f"configs/rl/{config}.yaml"),
        "--trainer.max_steps",
        "10",
        "--trainer.enable_progress_bar",
        "false",
        "--run_dir",
        str(run),
        "--model.init_args.skill_ckpt",
        str(SKILL_CKPT),
        "--model.init_args.warmup_transitions",
        "4",
        "--model.init_args.batch_size",
        "8",
        "--model.init_args.env",
        json.dumps({"max_episode_steps": 20}),
    ]
    assert main(args) == 0
    last = run / "checkpoints/last.ckpt"
    assert last.is_file()
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 10
    assert ckpt["pourlit_rl"]["replay"]["size"] >= 4
    if config != "spirl_cl":
        return
    # resume: networks, optimisers, replay buffer and counters continue from last.ckpt
    assert main([*args[:4], "25", *args[5:], "--ckpt_path", "last"]) == 0
    resumed = torch.load(last, map_location="cpu", weights_only=False)
    state, before = resumed["pourlit_rl"], ckpt["pourlit_rl"]
    assert resumed["global_step"] == 25 and state["updates"] == 25
    assert state["replay"]["size"] >= before["replay"]["size"] + 15
    assert state["env_steps"] > before["env_steps"]
    torch.testing.assert_close(
        state["replay"]["data"]["obs"][: before["replay"]["size"]], before["replay"]["data"]["obs"]
    )


@pytest.mark.parametrize("ratio", [0.5, 2.0])
def test_updates_per_transition_is_respected(tmp_path: Path, ratio: float) -> None:
    m = _small_module(updates_per_transition=ratio, batch_size=4)
    trainer = _trainer(tmp_path, max_steps=10)
    trainer.fit(m)
    assert m.updates == trainer.global_step == 10
    after_warmup = len(m.replay) - 8  # warmup may overshoot by a step's transitions (<= 2)
    if ratio < 1:
        assert after_warmup >= 10 / ratio
    else:
        assert 10 / ratio - 2 <= after_warmup <= 10 / ratio + 4


def test_env_state_dict_continues_bit_for_bit() -> None:
    from pourlit.sim.env import EnvConfig, PouringVecEnv

    cfg = EnvConfig(num_envs=2, max_episode_steps=6)  # episodes end and auto-reset in the run
    g = torch.Generator().manual_seed(1)
    actions = [torch.rand(2, 7, generator=g) * 2 - 1 for _ in range(14)]
    with PouringVecEnv(cfg) as a, PouringVecEnv(cfg) as b:
        a.reset(seed=3)
        for act in actions[:4]:
            a.step(act)
        b.load_state_dict(a.state_dict())  # b was never reset
        for act in actions[4:]:
            oa, ra, ta, ua, ia = a.step(act)
            ob, rb, tb, ub, ib = b.step(act)
            assert torch.equal(oa, ob) and torch.equal(ra, rb)
            assert torch.equal(ta, tb) and torch.equal(ua, ub)
            assert torch.equal(ia["episode_seed"], ib["episode_seed"])
        assert a.stats == b.stats and a.stats["episodes"] >= 2
    with PouringVecEnv(EnvConfig(num_envs=3)) as c, pytest.raises(ValueError, match="2 environ"):
        c.load_state_dict(b.state_dict())


def _params(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


@pytest.mark.parametrize(
    "variant",
    ["skills", "flat", "selection", "returns", "residual", "demos", "ensemble", "prior_select"],
)
def test_resume_equals_uninterrupted_training(tmp_path: Path, variant: str) -> None:
    """N updates + checkpoint + resume + N updates == 2N uninterrupted updates, bit for bit:
    networks, optimisers, log_alpha, replay buffer, counters, env and running skills; also with
    skill selection by Q, a critic warmup that ends mid-run and the prior-matched squash; for
    a residual agent, whose env carries a base agent's clock and skills; and with
    demonstration transitions in every batch (read again from their folder on resume)."""
    flat = variant in ("flat", "residual")
    kw = dict(env={"max_episode_steps": 25}, warmup_transitions=12, batch_size=8)
    if variant in ("selection", "returns"):
        kw |= dict(q_select=2, critic_warmup_updates=6, squash="prior")
    if variant == "returns":  # episodes' Monte Carlo returns in the replay, running ones saved
        kw |= dict(value_target="max", critic_state_norm=True)
    if variant == "ensemble":  # five LayerNorm critics, their targets and optimiser state,
        # choosing among the samples and the prior's mean skill
        kw |= dict(q_select=2, critic_warmup_updates=6, critic_ensemble=5, critic_layer_norm=True)
        kw |= dict(select_prior_mean=True)
    if variant == "prior_select":  # the prior's mean skill acts (p-0.2 samples), critics only,
        # selection with a margin for the mean, undiscounted Monte Carlo targets
        kw |= dict(q_select=2, critic_warmup_updates=6, select_prior_mean=True, select_margin=0.5)
        kw |= dict(behaviour="prior_mean", behaviour_sample_prob=0.2, train_policy=False)
        kw |= dict(value_target="mc", gamma=1.0, critic_ensemble=4, critic_layer_norm=True)
    if variant == "demos":
        from skill_fixtures import write_dataset

        demos = write_dataset(tmp_path / "demos", episodes=3)
        kw |= dict(value_target="mc", demo_dir=str(demos), demo_fraction=0.5)
    if flat:  # plain SAC: no checkpoint, env from the defaults
        kw |= dict(skill_ckpt=None, prior="none", prior_init=False, critic_hidden=32)
        kw["env"] = {"max_episode_steps": 8}  # one transition per env step: shorter episodes
    if variant == "residual":
        kw |= dict(base_ckpt=str(ROOT / "checkpoints/rl/default.ckpt"), critic_warmup_updates=6)

    def run(max_steps: int, ckpt: Path | None = None) -> tuple[SACModule, L.Trainer]:
        torch.manual_seed(0)
        m = _small_module(**kw)
        t = _trainer(tmp_path, max_steps=max_steps)
        t.fit(m, ckpt_path=ckpt)
        return m, t

    full, _ = run(20)
    half, t_half = run(10)
    path = tmp_path / "half.ckpt"
    t_half.save_checkpoint(path)
    torch.manual_seed(123)  # the checkpoint's RNG state, not this, must drive the resumed run
    resumed, t_res = run(20, path)
    assert t_res.global_step == 20 and resumed.updates == full.updates == 20
    assert resumed.env_steps == full.env_steps and resumed.episodes == full.episodes
    assert full.episodes >= 1  # episodes ended (and envs auto-reset) during the run
    from pourlit.rl.state import env_state

    a, b = _params(full), _params(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert len(full.replay) == len(resumed.replay)
    for k in full.replay.specs:
        a_k, b_k = full.replay.data[k], resumed.replay.data[k]  # (NaN: returns still open)
        torch.testing.assert_close(a_k, b_k, rtol=0, atol=0, equal_nan=True, msg=k)
    env_a, env_b = env_state(full), env_state(resumed)  # kept when fit closed the envs
    assert torch.equal(env_a["obs"], env_b["obs"])
    assert torch.equal(env_a["physics"]["state"], env_b["physics"]["state"])
    opt_a = full.trainer.optimizers[0].state_dict()["state"]
    opt_b = resumed.trainer.optimizers[0].state_dict()["state"]
    for i in opt_a:
        assert torch.equal(opt_a[i]["exp_avg"], opt_b[i]["exp_avg"])


@pytest.mark.parametrize("name", ["spirl_cl", "default"])
def test_shipped_rl_checkpoint_loads_and_acts(name: str) -> None:
    from pourlit.checkpoints import checkpoint_kind
    from pourlit.evaluate import load_rl_policy
    from pourlit.rl.acting import act

    path = ROOT / f"checkpoints/rl/{name}.ckpt"
    assert checkpoint_kind(path) == "rl"
    assert path.stat().st_size < 8_000_000  # weights only: no replay buffer, no optimisers
    class_path = torch.load(path, weights_only=False)["hyper_parameters"]["_class_path"]
    # spirl_cl was written before the rename, as pourlit.rl.HierarchicalSACModule
    assert class_path.endswith("HierarchicalSACModule" if name == "spirl_cl" else ".SACModule")
    policy = load_rl_policy(path, num_envs=2)
    assert type(policy.module) is SACModule
    space = policy.module.space
    assert space.horizon == 10 and space.latent_dim == 10
    s = space.state_mean + space.state_std * torch.randn(2, space.state_dim)
    policy.begin(np.arange(2))
    a = policy(s)
    assert a.shape == (2, 7) and a.abs().max() <= 1.0
    z = act(policy.module, s, "mean")
    assert z.abs().max() < policy.module.space.action_scale  # skills in the tanh range m
    hp, m = policy.module.hparams, policy.module
    if name == "default":  # the validation-best checkpoint of configs/rl/default.yaml, seed 0
        assert hp.squash == "prior" and hp.q_select == 2 and m.env_steps <= 200_000
        assert hp.value_target == "mc" and hp.critic_state_norm and hp.target_divergence == 1.0
        assert hp.action_scale == 4.0 and hp.skill_ckpt == "checkpoints/skills/spirl_cl.ckpt"
        # exported with its counters: whether it selects skills by Q is known without replay
        assert m.selecting == (m.updates >= hp.critic_warmup_updates) and m.updates > 0
    evaluation = json.loads(path.with_suffix(".eval.json").read_text())
    assert evaluation["seed"] == 10_000 and evaluation["episodes"] == 100


def test_prior_rollouts_act_with_sampled_or_mean_skills(monkeypatch) -> None:
    import pourlit.evaluate
    from pourlit.rl.acting import PriorPolicy

    sampled, mean = (PriorPolicy(SKILL_CKPT, 3, seed=1, mode=m) for m in ("sampled", "mean"))
    s = mean.skills.state_mean + mean.skills.state_std * torch.randn(3, mean.skills.state_dim)
    q = mean.skills.prior_dist(s)
    assert torch.equal(mean.choose(s), q.mu) and torch.equal(mean.choose(s), q.mu)
    z1, z2 = sampled.choose(s), sampled.choose(s)
    assert not torch.allclose(z1, q.mu) and not torch.allclose(z1, z2)  # z ~ q_hat, fresh noise
    with pytest.raises(ValueError, match="mode must be sampled or mean, got 'best'"):
        PriorPolicy(SKILL_CKPT, 1, mode="best")

    # pourlit evaluate on a skill checkpoint: sampled headline, the mean skill on the same seeds
    runs = []

    def fake_run(env, policy, begin, episodes, seed, frames=None, progress=True):
        runs.append((policy.mode, episodes, seed))
        return {"episodes": episodes, "success_rate": float(policy.mode == "mean")}

    monkeypatch.setattr(pourlit.evaluate, "run_episodes", fake_run)
    both = pourlit.evaluate.evaluate(str(SKILL_CKPT), episodes=3, seed=7, progress=False)
    assert runs == [("sampled", 3, 7), ("mean", 3, 7)]
    assert both["policy"] == "skill_prior" and both["success_rate"] == 0.0
    assert both["mean_skill"] == {"episodes": 3, "success_rate": 1.0}
    runs.clear()
    only = pourlit.evaluate.evaluate(str(SKILL_CKPT), episodes=2, mode="mean", progress=False)
    assert runs == [("mean", 2, 10_000)] and "mean_skill" not in only


def test_best_mean_acts_with_the_better_mean_by_q() -> None:
    """``best_mean``: z = argmax over {m tanh(mu_pi / c), m tanh(mu_q_hat / c)} of min_j Q_j,
    chosen per state; without a learned prior it is the policy's mean skill."""
    from pourlit.rl.acting import act

    torch.manual_seed(0)
    m = _small_module(squash="prior", action_scale=4.0)
    with torch.no_grad():  # move the policy's mean away from the prior's
        for p in m.policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    s = _states(m.space, 6)
    scale, w = m.space.action_scale, m.squash_width
    z_pi = scale * torch.tanh(m.policy(s).mu / w)
    z_q = scale * torch.tanh(m.space.prior_dist(s).mu / w)
    assert (z_pi - z_q).abs().max() > 1e-3
    prefer_prior = torch.tensor([True, False, True, True, False, False])
    target = torch.where(prefer_prior[:, None], z_q, z_pi)

    class Critic(nn.Module):  # highest at each state's target; twin 2 a little lower
        def forward(self, states, z):
            k = z.shape[0] // target.shape[0]
            q = -((z - target.repeat(k, 1)) ** 2).sum(-1)
            return q, q - 0.1

    m.critic = Critic()
    assert torch.allclose(act(m, s, "best_mean"), target)
    assert torch.allclose(act(m, s, "mean"), z_pi)
    sac = _small_module(skill_ckpt=None, prior="none", prior_init=False, action_scale=None)
    s = torch.randn(4, sac.space.state_dim)  # plain SAC, no learned prior: the policy's mean
    assert torch.equal(act(sac, s, "best_mean"), act(sac, s, "mean"))


def test_best_mean_needs_an_rl_checkpoint() -> None:
    import pourlit.evaluate

    with pytest.raises(ValueError, match="best_mean needs an RL checkpoint"):
        pourlit.evaluate.evaluate(str(SKILL_CKPT), episodes=1, mode="best_mean", progress=False)


def test_evaluate_modes_are_the_cli_choices() -> None:
    """``pourlit evaluate --mode`` offers exactly the modes ``evaluate`` accepts (the eval
    modes of training and ``both``), and an unknown one is refused before any work."""
    import pourlit.evaluate
    from pourlit.cli import build_parser
    from pourlit.rl.options import EVAL_MODES

    sub = next(a for a in build_parser()._actions if a.choices and "evaluate" in a.choices)
    mode = next(a for a in sub.choices["evaluate"]._actions if a.dest == "mode")
    assert set(mode.choices) == {*EVAL_MODES, "both"}
    with pytest.raises(ValueError, match="mode must be one of .*got 'greedy'"):
        pourlit.evaluate.evaluate(str(SKILL_CKPT), episodes=1, mode="greedy", progress=False)


@pytest.mark.parametrize("mode", ["mean", "sampled", "best_mean"])
def test_validation_acts_in_eval_mode(tmp_path: Path, mode: str) -> None:
    """Validation (what best.ckpt is chosen on) runs the episodes ``pourlit evaluate --mode
    eval_mode`` would run on the validation seeds: same policy, same seeds, same return."""
    from pourlit.rl.acting import AgentPolicy
    from pourlit.sim.episodes import run_episodes

    torch.manual_seed(0)
    m = _small_module(eval_mode=mode, eval_seed=321)
    out = _trainer(tmp_path).validate(m, verbose=False)[0]
    env = m._make_env()
    try:
        policy = AgentPolicy(m, env.num_envs, mode, 321)
        ref = run_episodes(env, policy, policy.begin, 2, 321, progress=False)
        other = AgentPolicy(m, env.num_envs, "mean" if mode == "sampled" else "sampled", 321)
        alt = run_episodes(env, other, other.begin, 2, 321, progress=False)
    finally:
        env.close()
    assert out["val/return"] == pytest.approx(ref["mean_return"], abs=1e-6)
    assert out["val/return"] != pytest.approx(alt["mean_return"], abs=1e-6)


def test_critic_warmup_trains_only_the_critic(tmp_path: Path) -> None:
    """During ``critic_warmup_updates`` the policy and the temperature stay as initialised (the
    prior's copy), the critic learns, and global_step still counts every update; afterwards
    the policy moves too."""
    torch.manual_seed(0)
    m = _small_module(critic_warmup_updates=6, q_select=2)
    pol0 = {k: v.clone() for k, v in m.policy.state_dict().items()}
    q0 = {k: v.clone() for k, v in m.critic.state_dict().items()}
    alpha0 = m.log_alpha.detach().clone()
    t = _trainer(tmp_path, max_steps=6)
    t.fit(m)
    assert t.global_step == 6 and m.updates == 6
    assert all(torch.equal(v, m.policy.state_dict()[k]) for k, v in pol0.items())
    assert torch.equal(m.log_alpha.detach(), alpha0)
    assert any(not torch.equal(v, m.critic.state_dict()[k]) for k, v in q0.items())
    assert m.selecting  # selection starts once the critic warmup is over
    t = _trainer(tmp_path, max_steps=9)
    t.fit(m)
    assert any(not torch.equal(v, m.policy.state_dict()[k]) for k, v in pol0.items())


def test_selection_acts_with_the_best_candidate_by_q() -> None:
    from pourlit.rl.acting import act, skill_candidates

    torch.manual_seed(0)
    m = _small_module(q_select=3, squash="prior")
    m.updates = 1  # as if trained: selection on
    s = _states(m.space.skills, n=5)
    g = torch.Generator().manual_seed(7)
    z = act(m, s, "sampled", generator=g)
    cands = skill_candidates(m, s, torch.Generator().manual_seed(7))
    assert cands.shape == (6, 5, 10)  # 3 from the policy, 3 from the prior
    q1, q2 = m.critic(s.repeat(6, 1), cands.reshape(30, 10))
    best = torch.min(q1, q2).view(6, 5).argmax(0)
    torch.testing.assert_close(z, cands[best, torch.arange(5)])
    m.updates = 0  # untrained critic: plain samples of the policy
    assert not m.selecting
    assert act(m, s, "sampled").shape == (5, 10)


def test_selection_weighs_the_prior_mean_skill() -> None:
    """``select_prior_mean``: the candidates are 2K samples then m tanh(mu_q_hat / c); a
    critic that values closeness to the prior's mean picks it, in acting and by name."""
    from pourlit.rl.acting import AgentPolicy, act, skill_candidates
    from pourlit.rl.select import candidates

    torch.manual_seed(0)
    m = _small_module(q_select=2, squash="prior", select_prior_mean=True)
    m.updates = 1
    s = _states(m.space.skills, n=5)
    cands = skill_candidates(m, s, torch.Generator().manual_seed(3))
    scale, w = m.space.action_scale, m.squash_width
    z_mean = scale * torch.tanh(m.space.prior_dist(s).mu / w)
    assert cands.shape == (5, 5, 10)  # 2 policy + 2 prior samples + the prior's mean
    torch.testing.assert_close(cands[-1], z_mean)
    pi, q = m.policy(s), m.space.prior_dist(s)  # the first 2K: the samples, as without the option
    samples = candidates(pi, q, 2, scale, torch.Generator().manual_seed(3), w)
    torch.testing.assert_close(cands[:4], samples)

    class NearMean(torch.nn.Module):  # Q = -|z - z_mean(s)|^2: the prior's mean is the best
        def forward(self, states, z):
            ref = scale * torch.tanh(m.space.prior_dist(states).mu / w)
            q = -((z - ref) ** 2).sum(-1)
            return q, q

    m.critic = NearMean()
    torch.testing.assert_close(act(m, s, "sampled"), z_mean)
    assert AgentPolicy(m, 2).name == "sampled, best of 4 and the prior's mean skill by Q"


def test_prior_mean_behaviour_samples_the_prior_with_probability_p() -> None:
    """``behaviour="prior_mean"``: each decision executes m tanh(mu_q_hat / c), or with
    probability p a squashed prior sample; p = 0 and p = 1 give exactly one or the other, and
    the swapped share of 4,000 decisions is p within 4 standard errors."""
    from pourlit.rl.acting import explore
    from pourlit.rl.select import squashed_mean, squashed_samples

    m = _small_module(squash="prior", behaviour="prior_mean", behaviour_sample_prob=0.0)
    s = _states(m.space.skills, n=4000)
    q, scale, w = m.space.prior_dist(s), m.space.action_scale, m.squash_width
    mean = squashed_mean(q, scale, w)
    torch.testing.assert_close(explore(m, s), mean)
    m.hparams.behaviour_sample_prob = 1.0
    torch.manual_seed(5)
    z = explore(m, s)
    torch.manual_seed(5)
    torch.testing.assert_close(z, squashed_samples(q, 1, scale, None, w)[0])
    m.hparams.behaviour_sample_prob = 0.15
    z = explore(m, s, warmup=True)  # the same during warmup
    swapped = (z - mean).abs().amax(-1) > 1e-6
    assert abs(swapped.float().mean().item() - 0.15) < 4 * (0.15 * 0.85 / 4000) ** 0.5
    m.hparams.behaviour = "policy"  # SPiRL: samples (here of the prior, in warmup)
    assert (explore(m, s[:50], warmup=True) - mean[:50]).abs().amax(-1).min() > 1e-6


def test_select_margin_keeps_the_prior_mean_unless_a_sample_beats_it() -> None:
    """With ``select_margin`` the prior's mean skill is executed unless a sample's min_j Q_j
    exceeds the mean's by more than the margin, in acting and in the critic's target."""
    from pourlit.rl.acting import AgentPolicy, act, selection_bonus, skill_candidates
    from pourlit.rl.select import best_by_q

    torch.manual_seed(0)
    m = _small_module(q_select=2, squash="prior", select_prior_mean=True)
    m.updates = 1
    s = _states(m.space.skills, n=6)
    scale, w = m.space.action_scale, m.squash_width
    z_mean = scale * torch.tanh(m.space.prior_dist(s).mu / w)

    class AwayFromMean(torch.nn.Module):  # Q = |z - z_mean(s)|^2: every sample beats the mean
        def forward(self, states, z):
            ref = scale * torch.tanh(m.space.prior_dist(states).mu / w)
            q = ((z - ref) ** 2).sum(-1)
            return q, q

    m.critic = AwayFromMean()
    cands = skill_candidates(m, s, torch.Generator().manual_seed(1))
    gap = ((cands[:-1] - z_mean) ** 2).sum(-1).amax(0).detach()  # (B,): the best sample's lead
    assert (gap > 0).all()
    for margin, keeps_mean in [(0.0, torch.zeros(6, dtype=torch.bool)), (1e9, None)]:
        m.hparams.select_margin = margin
        z = act(m, s, "sampled", generator=torch.Generator().manual_seed(1))
        is_mean = (z - z_mean).abs().amax(-1) < 1e-6
        assert is_mean.all() if keeps_mean is None else torch.equal(is_mean, keeps_mean)
    lead = gap.detach().sort().values
    margin = float(lead[2:4].mean())  # between the 3rd and 4th smallest leads
    m.hparams.select_margin = margin  # keeps the mean where the best sample leads by less
    z = act(m, s, "sampled", generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close((z - z_mean).abs().amax(-1) < 1e-6, gap < margin)
    assert int((gap < margin).sum()) == 3
    bonus = selection_bonus(m, 5)
    assert bonus[:4].tolist() == [0.0] * 4 and bonus[4].item() == pytest.approx(margin)
    assert torch.equal(best_by_q(m.critic, s, cands, bonus)[0], z)
    assert AgentPolicy(m, 2).name.endswith(f"mean skill (margin {margin:g}) by Q")


def test_train_policy_false_trains_the_critics_only(tmp_path: Path) -> None:
    """``train_policy=False``: past its critic warmup the policy and the temperature still
    stay the prior's copy and alpha 1; the critics learn; selection is on."""
    torch.manual_seed(0)
    m = _small_module(critic_warmup_updates=3, q_select=2, train_policy=False)
    pol0 = {k: v.clone() for k, v in m.policy.state_dict().items()}
    q0 = {k: v.clone() for k, v in m.critic.state_dict().items()}
    alpha0 = m.log_alpha.detach().clone()
    t = _trainer(tmp_path, max_steps=9)
    t.fit(m)
    assert t.global_step == 9 and m.updates == 9 and m.selecting
    assert all(torch.equal(v, m.policy.state_dict()[k]) for k, v in pol0.items())
    assert torch.equal(m.log_alpha.detach(), alpha0)
    assert any(not torch.equal(v, m.critic.state_dict()[k]) for k, v in q0.items())


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"q_select": -1}, "q_select"),
        ({"behaviour": "greedy"}, "behaviour must be one of"),
        ({"behaviour_sample_prob": 1.5}, r"behaviour_sample_prob must be in \[0, 1\]"),
        ({"select_margin": 1.0, "q_select": 2}, "select_margin .* needs select_prior_mean"),
        ({"select_prior_mean": True, "q_select": 0}, "select_prior_mean .* needs q_select >= 1"),
        ({"squash": "sigmoid"}, "squash must be one of"),
        ({"eval_mode": "greedy"}, "eval_mode must be one of"),
        ({"value_target": "lambda"}, "value_target must be one of"),
    ],
)
def test_bad_rl_options_fail_with_a_message(kw: dict, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        _small_module(**kw)


@pytest.mark.parametrize(("env_value", "expected"), [(None, 1), ("2", 2)])
def test_every_command_limits_torch_threads(monkeypatch, env_value, expected) -> None:
    """Not only ``fit``: ``evaluate`` ran at 43 instead of ~300 env steps/s with two threads
    on a busy 2-core machine."""
    before = torch.get_num_threads()
    if env_value is None:
        monkeypatch.delenv("POURLIT_TORCH_THREADS", raising=False)
    else:
        monkeypatch.setenv("POURLIT_TORCH_THREADS", env_value)
    try:
        torch.set_num_threads(3)
        assert main(["evaluate", "--episodes", "1"]) == 2  # no checkpoint: one-line error
        assert torch.get_num_threads() == expected
    finally:
        torch.set_num_threads(before)


def test_value_target_mc_fills_returns_and_checks_capacity(tmp_path: Path) -> None:
    """With ``value_target="mc"`` every transition of an episode that ended holds its
    discounted return in the replay (the critic's target) and the running ones hold NaN; a
    replay too small to keep every running episode is refused before training."""
    from pourlit.rl.returns import MC_KEY, discounted_returns

    torch.manual_seed(0)
    m = _small_module(value_target="mc", env={"max_episode_steps": 25}, gamma=0.9)
    _trainer(tmp_path, max_steps=12).fit(m)
    mc, r = m.replay.data[MC_KEY][: len(m.replay)], m.replay.data["reward"][: len(m.replay)]
    done = m.replay.data["terminated"][: len(m.replay)].bool()
    done |= m.replay.data["truncated"][: len(m.replay)].bool()
    assert m.episodes >= 2 and torch.isnan(mc).any() and not torch.isnan(mc).all()
    assert not torch.isnan(mc[done]).any()  # an episode's last transition always has its G
    torch.testing.assert_close(mc[done], r[done])  # G_T = r_T
    # one env's first episode: its 3 skills (25 steps, H = 10) are rows 0, 2, 4 of the buffer
    # when both envs run in lockstep
    rows = torch.tensor([0, 2, 4])
    torch.testing.assert_close(mc[rows], discounted_returns(r[rows], 0.9))
    with pytest.raises(ValueError, match="replay_capacity must be >= 10"):
        _trainer(tmp_path, max_steps=1).fit(_small_module(value_target="max", replay_capacity=4))


def test_fit_mixes_demonstrations_into_every_batch(tmp_path: Path) -> None:
    """With ``demo_dir`` the demonstrations' HL transitions (``pourlit.rl.demos``) sit in a
    buffer of their own, not the replay, and each update batch takes ``demo_fraction`` of its
    rows from them, with their Monte Carlo returns known."""
    from skill_fixtures import write_dataset

    from pourlit.data.rollout import list_rollouts, read_episode
    from pourlit.rl.returns import MC_KEY
    from pourlit.rl.update import sample_batch

    demos = write_dataset(tmp_path / "demos", episodes=3)  # 30-60 steps each, H = 10
    m = _small_module(value_target="mc", demo_dir=str(demos), demo_fraction=0.25)
    _trainer(tmp_path, max_steps=3, limit_val_batches=0).fit(m)
    windows = sum(-(-len(read_episode(p).states) // 10) for p in list_rollouts(demos))
    assert m.updates == 3 and m.demos is not None and len(m.demos) == windows
    assert len(m.replay) < 16 + 8  # the agent's own only
    batch = sample_batch(m)
    demo_obs = m.demos.data["obs"]
    from_demos = [(demo_obs == row).all(dim=1).any().item() for row in batch["obs"]]
    assert from_demos == [False] * 12 + [True] * 4
    assert not torch.isnan(batch[MC_KEY][12:]).any()


def test_default_config_is_spirl_plus_its_named_departures() -> None:
    """configs/rl/default.yaml differs from the paper-faithful configs/rl/spirl_cl.yaml (keys
    it leaves out take SACModule's defaults) in exactly the departures the README and
    docs/algorithm.md section 3 name, each one option, plus the validation episode count."""
    import inspect

    def args(name: str) -> dict:
        cfg = yaml.safe_load((ROOT / f"configs/rl/{name}.yaml").read_text())
        return cfg["model"]["init_args"]

    defaults = {k: p.default for k, p in inspect.signature(SACModule.__init__).parameters.items()}
    default, spirl = args("default"), args("spirl_cl")
    differ = {
        k: (default.get(k, defaults[k]), spirl.get(k, defaults[k]))
        for k in default.keys() | spirl.keys()
        if default.get(k, defaults[k]) != spirl.get(k, defaults[k])
    }
    assert differ == {
        "squash": ("prior", "tanh"),
        "action_scale": (4.0, 2.0),
        "q_select": (2, 0),
        "value_target": ("mc", "td"),
        "critic_state_norm": (True, False),
        "target_divergence": (1.0, 5.0),
        "critic_warmup_updates": (2000, 0),
        "warmup_transitions": (1000, 5000),
        "eval_episodes": (40, 10),
    }
