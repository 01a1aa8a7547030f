"""``pourlit report``: learning curves and a markdown report from RL runs and evaluations.

Reads the CSVLogger files (``<run>/logs/version_*/metrics.csv``) that ``pourlit fit`` writes
for the RL configs: training rows carry ``env_steps`` and the running ``train/success_rate``
and ``train/return`` of the epoch's finished episodes; validation rows carry
``val/env_steps`` and the validation episodes' metrics (``eval_mode``, seeds ``eval_seed``).
"""

from __future__ import annotations

import csv
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def _file_curves(path: Path) -> dict[str, list[tuple[float, float]]]:
    with path.open() as f:
        rows = list(csv.DictReader(f))
    curves: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        for prefix, xkey in (("train/", "env_steps"), ("val/", "val/env_steps")):
            x = row.get(xkey) or ""
            if not x:
                continue
            for name in ("success_rate", "return", "poured_fraction"):
                v = row.get(prefix + name) or ""
                if v:
                    curves.setdefault(prefix + name, []).append((float(x), float(v)))
    return curves


def read_curves(run: str | Path) -> dict[str, list[tuple[float, float]]]:
    """Curves keyed by metric: ``[(env_steps, value), ...]`` sorted by env steps.

    ``train/success_rate``, ``train/return``, ``train/poured_fraction`` (x = ``env_steps``) and
    ``val/success_rate``, ``val/return``, ``val/poured_fraction`` (x = ``val/env_steps``).

    A run folder holds one ``logs/version_*/metrics.csv`` per start: a run resumed from its
    checkpoint at x0 logs from x0 on into a new version, a run restarted from nothing from 0.
    The versions are read oldest first and each replaces the points at x >= its first x, so
    the curve is the run's history as its last checkpoint saw it (a killed run's steps after
    its last checkpoint, logged and then redone, appear once).
    """
    p = Path(run)
    files = (
        [p] if p.is_file() else sorted(p.glob("**/metrics.csv"), key=lambda f: f.stat().st_mtime)
    )
    if not files:
        raise FileNotFoundError(f"{p}: no metrics.csv under this run folder")
    curves: dict[str, list[tuple[float, float]]] = {}
    for path in files:
        new = _file_curves(path)
        if not new:
            continue
        x0 = min(x for points in new.values() for x, _ in points)
        for name in curves:
            curves[name] = [(x, v) for x, v in curves[name] if x < x0]
        for name, points in new.items():
            curves.setdefault(name, []).extend(points)
    for v in curves.values():
        v.sort()
    return {k: v for k, v in curves.items() if v}


def smooth(points: list[tuple[float, float]], window: int = 10) -> list[tuple[float, float]]:
    """Trailing moving average over ``window`` points (the logged training means are noisy)."""
    out = []
    for i, (x, _) in enumerate(points):
        chunk = [v for _, v in points[max(0, i - window + 1) : i + 1]]
        out.append((x, sum(chunk) / len(chunk)))
    return out


def plot_curves(runs: dict[str, str | Path], out: str | Path, title: str = "") -> Path:
    """One PNG with success rate and return vs env steps for each labelled run (training
    episodes smoothed as lines, validation episodes as markers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for i, (label, run) in enumerate(runs.items()):
        curves = read_curves(run)
        color = f"C{i}"
        for ax, name in zip(axes, ("success_rate", "return"), strict=True):
            train = smooth(curves.get(f"train/{name}", []))
            if train:
                ax.plot(*zip(*train, strict=True), color=color, label=f"{label} (training)")
            val = curves.get(f"val/{name}", [])
            if val:
                ax.plot(*zip(*val, strict=True), "o--", color=color, ms=4, label=f"{label} (eval)")
    for ax, name in zip(axes, ("success rate", "episode return"), strict=True):
        ax.set_xlabel("env steps")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0].set_ylim(-0.02, 1.02)
    axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.3f}"
    return str(v)


def write_report(
    out: str | Path,
    run: str | Path,
    evaluations: dict[str, str | Path],
    video: str | Path | None = None,
    collect_summary: str | Path | None = None,
    notes: str = "",
) -> Path:
    """Write ``out`` (markdown) next to ``learning_curve.png``: the evaluation metrics table
    (one row per labelled evaluation JSON of ``pourlit evaluate --json``, plus its mean-skill
    row when it has one), the learning curve
    of ``run``, the demonstrations' summary and a link to the policy video."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    png = plot_curves({"RL": run}, out.parent / "learning_curve.png", "pourlit RL run")
    cols = (
        "success_rate", "mean_poured_fraction", "mean_spilled_fraction", "mean_return",
        "episode_length", "episodes", "seed", "reward",
    )  # fmt: skip
    lines = [
        "# pourlit report",
        "",
        f"Written {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} from `{run}`.",
        "",
        "## Evaluation (held-out seeds)",
        "",
        "| policy | " + " | ".join(cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    for label, path in evaluations.items():
        res = json.loads(Path(path).read_text())
        rows = [(label, res)]
        if isinstance(res.get("mean_skill"), dict):  # pourlit evaluate --mode both
            rows.append((f"{label}, mean skill", {**res, **res["mean_skill"]}))
        for name, r in rows:
            lines.append(f"| {name} | " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |")
    curves = read_curves(run)
    steps = max((x for v in curves.values() for x, _ in v), default=0)
    lines += ["", "## Learning curve", "", f"![learning curve]({png.name})", ""]
    lines.append(f"Training ran {int(steps)} env steps (warmup included).")
    if collect_summary is not None:
        summ = json.loads(Path(collect_summary).read_text())
        keep = ("episodes_attempted", "episodes_written", "success_rate", "mean_poured_fraction")
        lines += ["", "## Demonstrations", ""]
        lines += [f"- {k}: {_fmt(summ[k])}" for k in keep if k in summ]
    if video is not None:
        lines += ["", "## Rollout", "", f"[the learned policy pouring]({Path(video).name})"]
    if notes:
        lines += ["", notes]
    out.write_text("\n".join(lines) + "\n")
    return out
