"""The ``pourlit`` command line.

    pourlit collect -c configs/collect/pouring.yaml --episodes 200 --num-envs 4 --out DIR
    pourlit inspect DIR_OR_FILE
    pourlit render DIR/rollout_00003.h5 -o ep3.mp4
    pourlit scene -o scene.xml [--liquid-count 64]
    pourlit fit|validate|test -c configs/skills/spirl_cl.yaml [--ckpt_path last]   (LightningCLI)
    pourlit evaluate --ckpt SKILL.ckpt --episodes 50 [--video out.mp4]
    pourlit export runs/rl/default/checkpoints/best.ckpt checkpoints/rl/default.ckpt

Errors in what the user gave (config, paths, files) print one line ``pourlit: error: ...``
and exit with status 2 (bad usage/config) or 1 (a failure while running).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _env_int(name: str) -> int | None:
    v = os.environ.get(name)
    return int(v) if v not in (None, "") else None


def _cmd_collect(args: argparse.Namespace) -> int:
    from pourlit.collect import collect, load_collect_config

    overrides = {
        "episodes": args.episodes,
        "num_envs": args.num_envs,
        "out": args.out,
        "seed": args.seed,
        "keep_failures": True if args.keep_failures else None,
        "images": True if args.images else None,
        "action_noise": args.action_noise,
        "rank": args.rank if args.rank is not None else _env_int("RANK"),
        "world_size": args.world_size if args.world_size is not None else _env_int("WORLD_SIZE"),
    }
    cfg = load_collect_config(args.config, overrides)
    summary = collect(cfg, progress=not args.quiet)
    keys = ("episodes_attempted", "episodes_written", "success_rate", "mean_poured_fraction")
    keys += ("mean_spilled_fraction", "env_steps", "wall_seconds", "env_steps_per_second")
    print(json.dumps({k: summary[k] for k in keys}))
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from pourlit.data.summary import format_summary, summarize

    path = Path(args.path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    summary = summarize(path)
    print(format_summary(summary))
    if summary.files == 0:
        print(f"pourlit: error: {path}: no rollout_*.h5 files found", file=sys.stderr)
        return 1
    return 1 if summary.bad_files and args.strict else 0


def _cmd_render(args: argparse.Namespace) -> int:
    from pourlit.replay import render_episode

    info = render_episode(
        args.file,
        args.output,
        source=args.source,
        camera=args.camera,
        size=(args.height, args.width),
        fps=args.fps,
    )
    print(json.dumps(info))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from pourlit.evaluate import evaluate

    result = evaluate(
        args.ckpt,
        policy=args.policy,
        episodes=args.episodes,
        num_envs=args.num_envs,
        seed=args.seed,
        video=args.video,
        progress=not args.quiet,
        mode=args.mode,
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from pourlit.checkpoints import export_checkpoint

    out = export_checkpoint(args.src, args.dst)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from pourlit.report import write_report

    evals = {}
    for item in args.eval or []:
        label, sep, path = item.partition("=")
        if not sep:
            raise ValueError(f"--eval {item!r}: expected LABEL=PATH.json")
        evals[label] = path
    out = write_report(args.output, args.run, evals, args.video, args.collect_summary)
    print(f"wrote {out} and {out.parent / 'learning_curve.png'}")
    return 0


def _cmd_scene(args: argparse.Namespace) -> int:
    from pourlit.sim.scene import LiquidConfig, build_spec

    spec = build_spec(LiquidConfig(count=args.liquid_count, radius=args.liquid_radius))
    spec.compile()
    out = Path(args.output)
    out.write_text(spec.to_xml())
    print(f"wrote {out} (open with: python -m mujoco.viewer --mjcf {out})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pourlit",
        description="Learn a robot pouring skill from demonstrations (SPiRL). "
        "Training: pourlit fit|validate|test -c CONFIG.yaml (LightningCLI; see --help there).",
    )
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("collect", help="run the scripted expert and write rollout HDF5 files")
    c.add_argument("-c", "--config", help="YAML collect config (flags override it)")
    c.add_argument("--episodes", type=int, help="episodes to attempt")
    c.add_argument("--num-envs", type=int, help="environments stepped in parallel")
    c.add_argument("--out", help="output folder (numbering continues if it has files)")
    c.add_argument("--seed", type=int)
    c.add_argument("--keep-failures", action="store_true", help="also write failed episodes")
    c.add_argument("--images", action="store_true", help="store camera images (traj0/images)")
    c.add_argument("--action-noise", type=float, help="std of noise on the expert's actions")
    c.add_argument("--rank", type=int, help="shard index (default: $RANK or 0)")
    c.add_argument("--world-size", type=int, help="number of shards (default: $WORLD_SIZE or 1)")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=_cmd_collect)

    i = sub.add_parser("inspect", help="summarise a rollout file or folder")
    i.add_argument("path")
    i.add_argument("--strict", action="store_true", help="exit 1 if any file is malformed")
    i.set_defaults(func=_cmd_inspect)

    r = sub.add_parser("render", help="render a stored episode to mp4/gif")
    r.add_argument("file")
    r.add_argument("-o", "--output", required=True, help="video path (.mp4 or .gif)")
    r.add_argument(
        "--source",
        choices=("auto", "replay", "images"),
        default="auto",
        help="replay actions in the simulator, or use stored images (auto: images if stored)",
    )
    r.add_argument("--camera", default="front")
    r.add_argument("--height", type=int, default=240)
    r.add_argument("--width", type=int, default=320)
    r.add_argument("--fps", type=int, default=25)
    r.set_defaults(func=_cmd_render)

    e = sub.add_parser("evaluate", help="roll out a policy on held-out seeds, print metrics")
    e.add_argument(
        "--ckpt",
        help="RL checkpoint (see --mode), skill checkpoint (prior rollouts) or action-prior checkpoint (BC)",
    )
    e.add_argument("--policy", choices=("auto", "expert"), default="auto")
    e.add_argument("--episodes", type=int, default=50)
    e.add_argument("--num-envs", type=int, default=2)
    e.add_argument("--seed", type=int, default=10_000, help="env seed (held out from collect)")
    e.add_argument("--video", help="write env 0's first episode to this .mp4/.gif")
    e.add_argument("--json", help="also write the metrics to this file")
    e.add_argument(
        "--mode",
        choices=("both", "sampled", "mean"),
        default="both",
        help="RL checkpoints: sampled skills as the agent acts (the headline metrics), the mean "
        "skill, or both (default: sampled, plus mean_skill on the same seeds)",
    )
    e.add_argument("-q", "--quiet", action="store_true")
    e.set_defaults(func=_cmd_evaluate)

    x = sub.add_parser(
        "export", help="small inference copy of a checkpoint (weights only; not for resuming)"
    )
    x.add_argument("src", help="checkpoint of pourlit fit (RL, skill or action prior)")
    x.add_argument("dst", help="where to write the copy")
    x.set_defaults(func=_cmd_export)

    rp = sub.add_parser("report", help="learning-curve PNG and markdown report of an RL run")
    rp.add_argument("--run", required=True, help="RL run folder (its CSV logs) or metrics.csv")
    rp.add_argument("--eval", action="append", help="LABEL=eval.json (pourlit evaluate --json)")
    rp.add_argument("--video", help="policy video to link")
    rp.add_argument("--collect-summary", help="summary.json of pourlit collect")
    rp.add_argument("-o", "--output", required=True, help="report path (.md)")
    rp.set_defaults(func=_cmd_report)

    s = sub.add_parser("scene", help="write the full scene (liquid included) as MJCF")
    s.add_argument("-o", "--output", required=True)
    s.add_argument("--liquid-count", type=int, default=32)
    s.add_argument("--liquid-radius", type=float, default=0.0065)
    s.set_defaults(func=_cmd_scene)
    return p


LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def limit_torch_threads() -> None:
    """pourlit's networks are small (128-256-wide MLPs/LSTMs, batches of 64-512) and its task
    code is many small torch ops per env step: intra-op threads gain little, and when another
    process holds a core their spin-waits make every step up to 100x slower (measured: 28 ms vs
    2.6 s per skill step on 2 busy cores; RL evaluation 43 vs ~300 env steps/s). Every command
    defaults to one thread; ``POURLIT_TORCH_THREADS=N`` overrides."""
    import torch

    torch.set_num_threads(max(1, int(os.environ.get("POURLIT_TORCH_THREADS", "1"))))


def main(argv: list[str] | None = None) -> int:
    args_given = argv is not None
    argv = sys.argv[1:] if argv is None else argv
    limit_torch_threads()
    if argv and argv[0] in LIGHTNING_COMMANDS:
        from pourlit.lightning_cli import run

        run(argv if args_given else None)  # None: LightningCLI reads sys.argv itself
        return 0
    parser = build_parser()
    args = parser.parse_args(argv)
    from pourlit.collect import ConfigError
    from pourlit.data.rollout import RolloutFormatError, RolloutWriteError

    try:
        return args.func(args)
    except (ConfigError, ValueError) as e:
        print(f"pourlit: error: {e}", file=sys.stderr)
        return 2
    except (RolloutFormatError, RolloutWriteError, FileNotFoundError, OSError) as e:
        print(f"pourlit: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pourlit: interrupted; files written so far are complete", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
