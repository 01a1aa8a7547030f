"""The flat baselines' one-step action prior (pourlit.skills.action_prior) and the flat RL
configs that use it (sac, flat_prior, bc_sac)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from skill_fixtures import write_dataset

from pourlit.checkpoints import checkpoint_kind
from pourlit.cli import main
from pourlit.rl import SACModule
from pourlit.skills.action_prior import ActionPriorModule, load_action_prior, pre_tanh

ROOT = Path(__file__).resolve().parents[1]


def test_pre_tanh_inverts_tanh_and_bounds_saturated_actions() -> None:
    a = torch.tensor([-1.0, -0.5, 0.0, 0.3, 1.0])
    u = pre_tanh(a)
    torch.testing.assert_close(torch.tanh(u[1:4]), a[1:4])
    assert float(u[-1]) == pytest.approx(math.atanh(1 - 1e-3), rel=1e-5) and float(u[0]) == -float(
        u[-1]
    )


def test_nll_matches_a_hand_computation() -> None:
    m = ActionPriorModule(state_dim=3, action_dim=2, hidden=8, blocks=1)
    torch.manual_seed(0)
    states = torch.randn(2, 4, 3)
    actions = torch.rand(2, 4, 2) * 2 - 1
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.float32)  # 5 real steps
    out = m.losses({"states": states, "actions": actions, "pad_mask": mask})
    assert out["n"] == 5
    s, a = states[mask.bool()], actions[mask.bool()]  # only the unpadded steps count
    u = torch.atanh(a.clamp(-0.999, 0.999))
    params = m.prior(s)  # train mode, as in losses(): BatchNorm over the same 5 steps
    mu, log_sigma = params[:, :2], params[:, 2:].clamp(-10, 2)
    nll = 0.5 * ((u - mu) / log_sigma.exp()) ** 2 + log_sigma + 0.5 * math.log(2 * math.pi)
    torch.testing.assert_close(out["nll"], nll.sum(-1).mean())
    torch.testing.assert_close(out["mse"], (torch.tanh(mu) - a).pow(2).mean())


def test_wrong_action_size_is_a_clear_error() -> None:
    m = ActionPriorModule(state_dim=3, action_dim=2, hidden=8, blocks=1)
    batch = {
        "states": torch.zeros(2, 4, 3),
        "actions": torch.zeros(2, 4, 5),
        "pad_mask": torch.ones(2, 4),
    }
    with pytest.raises(ValueError, match="5 values, the model 2"):
        m.losses(batch)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> Path:
    """``pourlit fit -c configs/skills/flat_prior.yaml`` made small, on synthetic rollouts."""
    root = tmp_path_factory.mktemp("flat_prior")
    data = write_dataset(root / "data")
    cfg = yaml.safe_load((ROOT / "configs/skills/flat_prior.yaml").read_text())
    run = root / "run"
    cfg["trainer"] |= {"max_epochs": 3, "default_root_dir": str(run), "enable_progress_bar": False}
    cfg["trainer"]["logger"][0]["init_args"]["save_dir"] = str(run)
    cfg["trainer"]["callbacks"][0]["init_args"]["dirpath"] = str(run / "checkpoints")
    cfg["model"]["init_args"] |= {"hidden": 32, "blocks": 1}
    cfg["data"]["init_args"] |= {
        "data_dir": str(data), "horizon": 5, "batch_size": 16, "windows_per_epoch": 64,
        "val_windows": 32, "val_fraction": 0.25,
    }  # fmt: skip
    path = root / "flat_prior_small.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["fit", "-c", str(path)]) == 0
    return run / "checkpoints" / "last.ckpt"


def test_cli_fit_learns_and_checkpoint_loads(fitted: Path) -> None:
    rows = (fitted.parents[1] / "logs/version_0/metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    col = header.index("val/nll")
    nll = [float(r.split(",")[col]) for r in rows[1:] if r.split(",")[col]]
    assert len(nll) == 3 and nll[-1] < nll[0]  # the fit improves the likelihood
    prior = load_action_prior(fitted)
    assert (prior.state_dim, prior.action_dim) == (50, 7)
    assert prior.env_config is not None and prior.env_config["max_episode_steps"] == 30
    assert not torch.equal(prior.state_mean, torch.zeros(50))  # adopted the data's statistics
    assert checkpoint_kind(fitted) == "action_prior"
    kind = torch.load(fitted, map_location="cpu", weights_only=False)["pourlit_kind"]
    assert kind == "action_prior"  # recorded, not guessed
    with pytest.raises(ValueError, match="not a pourlit action-prior checkpoint"):
        load_action_prior(ROOT / "checkpoints/skills/spirl_cl.ckpt")


def test_bc_policy_and_flat_prior_start_as_the_prior(fitted: Path) -> None:
    m = SACModule(action_prior_ckpt=str(fitted), prior="learned", target_divergence=1.0)
    s = m.space.state_mean + m.space.state_std * torch.randn(16, 50)
    pi, q = m.policy(s), m.space.prior_dist(s)
    assert torch.equal(pi.mu, q.mu) and torch.equal(pi.log_sigma, q.log_sigma)
    assert m.space.horizon == 1 and m.space.latent_dim == 7 and m.space.action_scale == 1.0
    z = torch.tensor([[-3.0, -1.0, 0.0, 0.2, 1.0, 2.0, 0.5]])
    torch.testing.assert_close(m.low_level(s[:1], z), z.clamp(-1, 1))  # flat: identity
    with pytest.raises(ValueError, match="action_scale must be 1"):
        SACModule(action_prior_ckpt=str(fitted), action_scale=2.0)
    with pytest.raises(ValueError, match="needs a learned prior"):
        SACModule(prior="learned", prior_init=False)
    with pytest.raises(ValueError, match="select_prior_mean needs a learned prior"):
        SACModule(prior="none", prior_init=False, q_select=1, select_prior_mean=True)
    with pytest.raises(ValueError, match="not both"):
        SACModule(skill_ckpt="a.ckpt", action_prior_ckpt=str(fitted))


@pytest.mark.parametrize("config", ["sac", "flat_prior", "bc_sac"])
def test_cli_fit_flat_rl_config(tmp_path: Path, fitted: Path, config: str) -> None:
    run = tmp_path / "run"
    args = [
        "fit", "-c", str(ROOT / f"configs/rl/{config}.yaml"),
        "--trainer.max_steps", "12", "--trainer.enable_progress_bar", "false",
        "--run_dir", str(run),
        "--model.init_args.warmup_transitions", "6", "--model.init_args.batch_size", "8",
        "--model.init_args.env", json.dumps({"max_episode_steps": 10, "reward": "shaped"}),
    ]  # fmt: skip
    if config != "sac":
        args += ["--model.init_args.action_prior_ckpt", str(fitted)]
    assert main(args) == 0
    ckpt = torch.load(run / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 12 and ckpt["pourlit_rl"]["updates"] == 12
    # flat: one transition per env step (2 envs), one update each after the warmup
    assert ckpt["pourlit_rl"]["replay"]["size"] == ckpt["pourlit_rl"]["env_steps"]
    hp = ckpt["hyper_parameters"]
    assert hp["skill_ckpt"] is None and hp["prior"] == {"sac": "none", "bc_sac": "none"}.get(
        config, "learned"
    )
    # the RL checkpoint is self-contained: evaluation works with the prior file gone
    moved = tmp_path / "elsewhere.ckpt"
    if config != "sac":
        fitted.rename(moved)
    try:
        report = tmp_path / "eval.json"
        cmd = ["evaluate", "--ckpt", str(run / "checkpoints/last.ckpt"), "--episodes", "2"]
        assert main([*cmd, "-q", "--json", str(report)]) == 0
    finally:
        if config != "sac":
            moved.rename(fitted)
    result = json.loads(report.read_text())
    assert result["policy"] == "flat_sac (sampled)" and result["episodes"] == 2
    assert result["mean_skill"]["episodes"] == 2  # the mean action, on the same seeds
    assert result["reward"] == "shaped"
