"""``avatar-jax export --workdir DIR --out BUNDLE``: the latest checkpoint of a run -> an inference bundle."""

from __future__ import annotations

import time

from rich.console import Console

from avatar_jax.errors import InputError
from avatar_jax.export.layout import PLATFORMS


def parse_resolution(text: str) -> tuple[int, int]:
    """``"256x256"`` -> ``(256, 256)``."""
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise InputError(f"resolution must look like 256x256, got {text!r}") from None
    if w < 2 or h < 2 or w % 2 or h % 2:
        raise InputError(f"resolution must be even sizes >= 2 (H.264), got {text!r}")
    return w, h


def add_arguments(parser):
    parser.add_argument("--workdir", required=True, help="training workdir (config.json + checkpoints/)")
    parser.add_argument("--out", required=True, help="bundle folder to write (replaced if it is a bundle)")
    parser.add_argument("--data", default=None, help="the run's dataset root (default: its config's data.root)")
    parser.add_argument("--resolution", action="append", default=None,
                        help="WxH the bundle renders; repeat for several (default: 256x256 and 512x512)")
    parser.add_argument("--platforms", default=",".join(PLATFORMS), help="comma list of cpu, cuda, tpu")
    parser.add_argument("--capacity-factor", type=float, default=4.0,
                        help="render slots per frame as a multiple of the rest pose's (raise if frames overflow)")


def run(args, config) -> int:
    from avatar_jax.export.bundle import DEFAULT_RESOLUTIONS
    from avatar_jax.export.from_workdir import export_workdir

    del config  # the run's own config.json decides
    console = Console()
    resolutions = [parse_resolution(r) for r in args.resolution] if args.resolution else DEFAULT_RESOLUTIONS
    platforms = [p.strip() for p in args.platforms.split(",") if p.strip()]
    tic = time.perf_counter()
    with console.status("exporting") as status:
        out, step = export_workdir(args.workdir, args.out, data_root=args.data, resolutions=resolutions,
                                   platforms=platforms, capacity_factor=args.capacity_factor,
                                   progress=lambda msg: status.update(msg))
    console.print(f"wrote bundle {out} (step {step}; {', '.join(platforms)}; "
                  f"{', '.join(f'{w}x{h}' for w, h in resolutions)}) in {time.perf_counter() - tic:.0f} s",
                  soft_wrap=True)  # never break the path
    return 0
