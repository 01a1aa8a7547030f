"""``pourlit fit|validate|test``: LightningCLI over pourlit's LightningModules and data modules.

The model and data classes come from the config's ``class_path`` (subclass mode). The data
module's state/action sizes and environment config are linked into the model, so a config
never repeats them: ``data.state_dim -> model.init_args.state_dim`` and so on.

An RL config (``pourlit.rl.SACModule``) has no ``data:`` section: the module makes
its own loaders. jsonargparse links cannot be made conditional, so ``run`` picks one of two
CLIs by whether the arguments give a data module (a ``data`` key in a ``-c/--config`` file or a
``--data...`` flag): ``PourlitCLI`` (data required, linked into the model) or ``PourlitRLCLI``
(no data module, no links).
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI


class PourlitCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for name in ("state_dim", "action_dim", "env_config"):
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")
        parser.link_arguments("data.init_args.horizon", "model.init_args.horizon")


class PourlitRLCLI(LightningCLI):
    """LightningCLI for models without a data module (the RL stage): nothing is linked."""


def _config_paths(args: list[str]) -> list[str]:
    paths = []
    for i, a in enumerate(args):
        if a in ("-c", "--config") and i + 1 < len(args):
            paths.append(args[i + 1])
        elif a.startswith("--config="):
            paths.append(a.split("=", 1)[1])
    return paths


def _gives_data(args: list[str]) -> bool:
    """Whether ``args`` configure a data module (see the module docstring)."""
    from pathlib import Path

    import yaml

    if any(a == "--data" or a.startswith(("--data.", "--data=")) for a in args):
        return True
    for path in _config_paths(args):
        p = Path(path)
        if not p.is_file():
            return True  # let LightningCLI report the bad path
        try:
            cfg = yaml.safe_load(p.read_text())
        except yaml.YAMLError:
            return True  # ... or the bad YAML
        if not isinstance(cfg, dict) or cfg.get("data") is not None:
            return True
    return not _config_paths(args)  # no config at all: the skills CLI (its --help)


def run(args: list[str] | None) -> None:
    """Run LightningCLI with ``args`` (e.g. ``["fit", "-c", "configs/skills/spirl_cl.yaml"]``;
    None reads ``sys.argv``)."""
    import sys

    if _gives_data(list(sys.argv[1:] if args is None else args)):
        PourlitCLI(
            L.LightningModule,
            L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=args,
            save_config_kwargs={"overwrite": True},
        )
    else:
        PourlitRLCLI(
            L.LightningModule,
            None,
            subclass_mode_model=True,
            args=args,
            save_config_kwargs={"overwrite": True},
        )


def rl_checkpoint_callbacks(dirpath: str) -> str:
    """The ``--trainer.callbacks`` value (JSON) that puts an RL config's two checkpoint
    callbacks in ``dirpath``: last.ckpt (newest state, for resuming) and best.ckpt (best
    ``val/success_rate``). ``--trainer.callbacks.init_args.dirpath`` would move only one."""
    import json

    ckpt = "lightning.pytorch.callbacks.ModelCheckpoint"
    common = {"dirpath": str(dirpath), "save_top_k": 1, "enable_version_counter": False}
    return json.dumps(
        [
            {"class_path": ckpt, "init_args": {**common, "save_last": True}},
            {
                "class_path": ckpt,
                "init_args": {
                    **common,
                    "monitor": "val/success_rate",
                    "mode": "max",
                    "filename": "best",
                },
            },
        ]
    )
