"""``avatar-jax demo [--image PHOTO] [--out DIR] [--overwrite]``: the whole product, offline, on CPU.

Thin layer over :func:`avatar_jax.demo.run_demo`: prints each stage as it goes, then a table of the
stages' seconds, the held-out scores (trained vs untrained) and where every output went.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def add_arguments(parser):
    parser.add_argument("--out", default=None, help="output folder (default: config.demo.out); a rerun resumes")
    parser.add_argument("--image", default=None,
                        help="photo of a person (default: config.demo.image, else skimage's astronaut)")
    parser.add_argument("--overwrite", action="store_true", help="replace an --out that holds another run")
    parser.add_argument("--no-progress", action="store_true", help="no live progress bars")


def run(args, config) -> int:
    from avatar_jax.demo import STAGES, run_demo

    console = Console()
    result = run_demo(config, args.out, image=args.image, overwrite=args.overwrite, progress=not args.no_progress,
                      say=lambda msg: console.print(msg, soft_wrap=True))
    table = Table(title="demo stages")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    table.add_column("")
    for stage in STAGES:
        info = result.stages.get(stage)
        if info:
            table.add_row(stage, f"{info['seconds']:.0f}", "reused" if info["reused"] else "")
    table.add_row("total", f"{result.metrics['total_seconds']:.0f}", "")
    console.print(table)
    held = result.metrics["held_out"]
    if held["trained"]:
        console.print(f"held out: {held['clips']} unseen sentences in an unseen voice ({held['voice']}), "
                      f"{held['frames_total']} frames at {held['size']} px, scored whole:", soft_wrap=True)
        for text in held["texts"]:
            console.print(f"  {text!r}", soft_wrap=True)
        for name in ("untrained", "trained"):
            s = held[name]
            console.print(f"  {name:9s} PSNR in the person mask {s['psnr_mask_db']:.2f} dB, mouth-opening "
                          f"correlation {s['mouth_corr']:+.3f}")
    p = result.paths
    for what, path in (("video", p.video), ("frame strip", p.strip), ("metrics", p.metrics), ("avatar", p.avatar),
                       ("bundle", p.bundle), ("training run", p.run)):
        console.print(f"wrote {what}: {path}", soft_wrap=True)
    return 0
