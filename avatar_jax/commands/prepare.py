"""``avatar-jax prepare``: talking videos (or synthetic clips) -> training records.

Thin layer over :func:`avatar_jax.data.prepare.prepare_folder` and
:func:`avatar_jax.data.synthetic.prepare_synthetic`; prints what was prepared, skipped or rejected.
"""

from __future__ import annotations

import os

from avatar_jax.data.detect import MediaPipeDetector
from avatar_jax.data.prepare import PrepareOptions, find_videos, prepare_folder
from avatar_jax.data.video import VIDEO_EXTENSIONS
from avatar_jax.errors import InputError


def add_arguments(parser) -> None:
    parser.add_argument("--videos", default=None, help="folder of talking videos (DIR/<subject>/*.mp4|mov|webm)")
    parser.add_argument("--out", required=True, help="dataset folder to write (records, index.json, report)")
    parser.add_argument("--synthetic", action="store_true", help="generate synthetic talking clips instead")
    parser.add_argument("--avatar", default="synthetic",
                        help="for --synthetic: a reconstructed avatar folder, or 'synthetic' (built-in figure)")
    parser.add_argument("--workers", type=int, default=None, help="parallel processes (default: config.data.workers)")
    parser.add_argument("--force", action="store_true", help="redo videos that were already prepared")


def run(args, config) -> int:
    from rich.console import Console

    console = Console()
    data = config.data
    workers = args.workers if args.workers is not None else int(data.workers)
    if args.synthetic:
        from avatar_jax.data import synthetic

        report = synthetic.prepare_synthetic(args.avatar, args.out, synthetic.SyntheticOptions.from_config(data),
                                             workers=workers, force=args.force, held_out=float(data.held_out),
                                             seed=int(config.seed))
        console.print(f"[bold]prepare --synthetic[/bold]: {report['clips']} clips in {args.out}")
        return 0
    if not args.videos:
        raise InputError("prepare needs --videos DIR (or --synthetic)")
    if not find_videos(args.videos):
        raise InputError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) under {args.videos!r}")
    detector = MediaPipeDetector(str(data.mediapipe_python))
    report = prepare_folder(args.videos, args.out, PrepareOptions.from_config(data), detector, workers=workers,
                            force=args.force, held_out=float(data.held_out), seed=int(config.seed))
    console.print(f"[bold]prepare[/bold]: {report['videos']} videos -> {report['clips']} clips "
                  f"({report['prepared']} prepared, {report['skipped']} already done, {report['rejected']} rejected)")
    for r in report["results"]:
        if r["status"] == "rejected":
            console.print(f"  rejected {r['source']}: {r['reason']}")
        for c in r["rejected_clips"]:
            console.print(f"  dropped clip {c['clip']}: {c['reason']}")
        for note in r["notes"]:
            if note != "already prepared (resume)":
                console.print(f"  note {r['source']}: {note}")
    console.print(f"report: {os.path.join(args.out, 'prepare_report.json')}")
    return 0
