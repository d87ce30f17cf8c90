"""``depthcube train`` (registered by :mod:`depthcube.cli` through :func:`register`).

This module imports no torch: the handler imports the training loop when it runs, so ``depthcube
--help`` and the cube commands stay light.
"""

from __future__ import annotations

import os
from pathlib import Path


def register(sub) -> None:
    """Add the ``train`` subcommand to ``depthcube``'s subparsers."""
    t = sub.add_parser("train", help="train the baseline model on a cube (CPU or CUDA)",
                       description="Train the baseline U-Net (or x0 diffusion) on the cube named in CONFIG; logs loss, "
                                   "samples/s and data-wait, validates with a PNG, checkpoints and resumes.")
    t.add_argument("config", help="training config YAML (see configs/train.yaml)")
    t.add_argument("--cube", help="cube path or URL (overrides data.cube)")
    t.add_argument("--out-dir", help="run folder (overrides run.out_dir)")
    t.add_argument("--max-steps", type=int, help="overrides run.max_steps")
    t.add_argument("--device", help="torch device, e.g. cpu or cuda:0 (overrides run.device)")
    t.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint in the run folder")
    t.set_defaults(func=_train)


def _train(args) -> int:
    import dataclasses

    from .config import load_train_config
    from .loop import train

    cfg = load_train_config(args.config)
    run = {k: v for k, v in (("out_dir", args.out_dir and str(Path(args.out_dir).resolve())),
                             ("max_steps", args.max_steps), ("device", args.device)) if v is not None}
    if args.fresh:
        run["resume"] = False
    data = {"cube": args.cube} if args.cube else {}
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, **run), data=dataclasses.replace(cfg.data, **data))
    metrics = train(cfg)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports
        return 0
    print("done: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()))
    return 0
