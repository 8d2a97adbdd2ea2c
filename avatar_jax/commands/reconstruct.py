"""``avatar-jax reconstruct --image PHOTO --out DIR``: a canonical Gaussian avatar from one photo.

Thin layer over :mod:`avatar_jax.personalize.reconstruct`: the output folder is checked before any
work (:mod:`avatar_jax.personalize.output_dir`), quality warnings are printed, and ``--strict`` makes
them an exit status of 4 (the files are still written, with the warnings in ``report.json``).
"""

from __future__ import annotations

from rich.console import Console

from avatar_jax.personalize import output_dir, photo_input
from avatar_jax.personalize.reconstruct import reconstruct, write_outputs

EXIT_POOR_QUALITY = 4


def add_arguments(parser):
    parser.add_argument("--image", required=True, help="photo of a person (png/jpg; grayscale, RGB or RGBA)")
    parser.add_argument("--out", required=True, help="output folder (new or empty, or --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--person", type=int, default=None,
                        help="which person of a group photo, 0 = the largest face (default)")
    parser.add_argument("--strict", action="store_true",
                        help=f"exit with status {EXIT_POOR_QUALITY} when a quality bar fails")


def run(args, config) -> int:
    console = Console(stderr=False)
    image = photo_input.load_image(args.image)
    staging = output_dir.prepare(args.out, args.overwrite)
    try:
        outputs, report = reconstruct(image, config, console.print, person=args.person)
        write_outputs(staging, outputs, report)
        output_dir.commit(staging, args.out)
    finally:
        output_dir.discard(staging)
    console.print(f"[4/4] wrote {args.out}/avatar.ply, avatar.npz, overlay.png, turntable.png, report.json; "
                  f"PSNR {report['psnr_in_mask_db']:.2f} dB, keypoint error "
                  f"{100 * report['keypoint_error_fraction_of_height']:.2f}% of height, "
                  f"total {report['total_s']:.1f}s", soft_wrap=True)
    for w in report["warnings"]:
        console.print(f"[yellow]warning: {w}[/yellow]")
    return EXIT_POOR_QUALITY if args.strict and report["warnings"] else 0
