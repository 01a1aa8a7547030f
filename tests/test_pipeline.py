"""End to end, at toy scale, the commands `make demo` chains: collect -> fit the skill prior ->
train SPiRL for a few hundred updates -> evaluate -> report (PNG + markdown + video link)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from pourlit.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_collect_fit_rl_evaluate_report(tmp_path: Path) -> None:
    data, skills, rl = tmp_path / "data", tmp_path / "skills", tmp_path / "rl"
    cfg = str(ROOT / "configs/collect/pouring.yaml")
    assert main(["collect", "-c", cfg, "--episodes", "4", "--out", str(data), "-q"]) == 0
    assert len(list(data.glob("rollout_*.h5"))) >= 3

    ckpt_cb = [
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {"dirpath": str(skills / "checkpoints"), "save_last": True},
        }
    ]
    fit_skills = [
        "fit", "-c", str(ROOT / "configs/skills/spirl_cl.yaml"),
        "--data.init_args.data_dir", str(data), "--data.init_args.windows_per_epoch", "256",
        "--data.init_args.val_windows", "64", "--data.init_args.val_fraction", "0.25",
        "--model.init_args.hidden", "64", "--trainer.max_epochs", "2",
        "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(skills),
        "--trainer.logger.init_args.save_dir", str(skills),
        "--trainer.callbacks", json.dumps(ckpt_cb),
    ]  # fmt: skip
    assert main(fit_skills) == 0
    skill_ckpt = skills / "checkpoints/last.ckpt"

    fit_rl = [
        "fit", "-c", str(ROOT / "configs/rl/default.yaml"),
        "--model.init_args.skill_ckpt", str(skill_ckpt),
        "--model.init_args.critic_warmup_updates", "100",  # skill selection for the last 200
        "--model.init_args.warmup_transitions", "60", "--model.init_args.batch_size", "64",
        "--model.init_args.eval_episodes", "2", "--model.init_args.max_env_steps", "100000",
        "--trainer.max_steps", "300", "--trainer.limit_train_batches", "200",
        "--trainer.enable_progress_bar", "false", "--run_dir", str(rl),
    ]  # fmt: skip
    assert main(fit_rl) == 0
    last = rl / "checkpoints/last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=False)
    assert state["global_step"] == 300
    assert state["pourlit_rl"]["env_steps"] >= 10 * (60 + 300) - 20  # H = 10 env steps each

    assert state["pourlit_rl"]["updates"] == 300 and state["hyper_parameters"]["q_select"] == 2
    best = rl / "checkpoints/best.ckpt"  # the best validation success (seeds 20000)
    assert torch.load(best, map_location="cpu", weights_only=False)["global_step"] <= 300

    ev = tmp_path / "eval.json"
    video = tmp_path / "policy.mp4"
    cmd = ["evaluate", "--ckpt", str(best), "--episodes", "2", "-q"]
    assert main([*cmd, "--json", str(ev), "--video", str(video)]) == 0
    assert video.stat().st_size > 1000

    report = tmp_path / "out/report.md"
    cmd = ["report", "--run", str(rl), "--eval", f"RL={ev}", "--video", str(video)]
    assert main([*cmd, "--collect-summary", str(data / "summary.json"), "-o", str(report)]) == 0
    text = report.read_text()
    result = json.loads(ev.read_text())
    assert result["policy"] == "hierarchical_sac (sampled, best of 4 by Q)"
    assert f"| RL | {result['success_rate']:.3f} |" in text
    assert f"| RL, mean skill | {result['mean_skill']['success_rate']:.3f} |" in text
    assert "![learning curve](learning_curve.png)" in text and "policy.mp4" in text
    png = report.parent / "learning_curve.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_report_reads_training_and_validation_curves(tmp_path: Path) -> None:
    from pourlit.report import read_curves, smooth

    csv = tmp_path / "logs/version_0/metrics.csv"
    csv.parent.mkdir(parents=True)
    csv.write_text(
        "env_steps,step,train/success_rate,train/return,val/env_steps,val/success_rate\n"
        "200,1,0.5,1.0,,\n"
        ",1,,,250,0.25\n"
        "100,0,0.0,0.5,,\n"
    )
    curves = read_curves(tmp_path)
    assert curves["train/success_rate"] == [(100.0, 0.0), (200.0, 0.5)]  # sorted by env steps
    assert curves["val/success_rate"] == [(250.0, 0.25)]
    # a resumed run logs into a new version from its checkpoint on (x0 = 200): the killed
    # run's points at x >= 200 are replaced; a restart from nothing replaces everything
    time.sleep(0.01)
    resumed = tmp_path / "logs/version_1/metrics.csv"
    resumed.parent.mkdir(parents=True)
    resumed.write_text(
        "env_steps,step,train/success_rate,val/env_steps,val/success_rate\n"
        "200,1,0.75,,\n"
        ",2,,300,0.5\n"
    )
    curves = read_curves(tmp_path)
    assert curves["train/success_rate"] == [(100.0, 0.0), (200.0, 0.75)]
    assert curves["val/success_rate"] == [(300.0, 0.5)]  # 250 was logged after the checkpoint
    assert curves["train/return"] == [(100.0, 0.5)]
    assert smooth([(0, 0.0), (1, 1.0), (2, 2.0)], window=2) == [(0, 0.0), (1, 0.5), (2, 1.5)]
    assert main(["report", "--run", str(tmp_path / "nothing"), "-o", str(tmp_path / "r.md")]) == 2
    assert main(["report", "--run", str(tmp_path), "--eval", "x.json", "-o", "r.md"]) == 2
