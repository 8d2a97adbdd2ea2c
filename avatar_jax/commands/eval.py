"""``avatar-jax eval --workdir DIR [--split held_out]``: render the held-out clips with a trained run (and any
runs to compare with) and write a Table-2-style report: ``report.json``, ``report.md``, ``frames_*.png``.

``avatar-jax eval --ablations --workdir DIR [--config ...]``: train every Table-3 row of the given config
(full model, each ``model.use_*`` off, loss ablations, the pose-driven baseline) with its budget in
``DIR/runs/<row>``, evaluate each and write ``DIR/ablations.json`` and ``DIR/ablations.md``; rerunning the
same command continues with the unfinished rows.

Thin layer over :mod:`avatar_jax.eval.run` (workdir -> renders), :mod:`avatar_jax.eval.report` (scores) and
:mod:`avatar_jax.eval.ablations` (the runner).
"""

from __future__ import annotations

import os
import time

from rich.console import Console

from avatar_jax.errors import InputError


def add_arguments(parser):
    parser.add_argument("--workdir", required=True, help="training workdir of the audio-driven model "
                                                         "(with --ablations: the folder the ablation runs go in)")
    parser.add_argument("--ablations", action="store_true",
                        help="train and evaluate every Table-3 row of --config with its budget (resumable)")
    parser.add_argument("--no-baseline", action="store_true", help="--ablations without the pose-driven baseline")
    parser.add_argument("--split", default="held_out", help="held_out (the index's test split), train or all")
    parser.add_argument("--data", default=None, help="dataset root (default: the run's data.root)")
    parser.add_argument("--out", default=None, help="report folder (default: WORKDIR/eval)")
    parser.add_argument("--name", default="audio-driven", help="the run's row name in the table")
    parser.add_argument("--compare", action="append", default=[], metavar="NAME=WORKDIR",
                        help="another trained run on the same data (e.g. a baseline or ablation); repeatable")
    parser.add_argument("--clips", type=int, default=0, help="evaluate the first N clips of the split (0: all)")
    parser.add_argument("--frames", type=int, default=0, help="first N frames of each clip (0: whole clips)")
    parser.add_argument("--no-rest", action="store_true", help="leave out the rest-pose (no motion) reference row")
    parser.add_argument("--syncnet", default=None, help="local syncnet_v2.model: adds SyncC / SyncD")
    parser.add_argument("--lpips", default=None, help="lpips' head weights (lpips/weights/v0.1/alex.pth): adds LPIPS")
    parser.add_argument("--lpips-backbone", default=None,
                        help="torchvision's trunk weights for --lpips (alexnet-owt-7be5be79.pth / vgg16-397923af.pth)")
    parser.add_argument("--lpips-net", default="alex", choices=("alex", "vgg"), help="LPIPS trunk")
    parser.add_argument("--inception", default=None, help="local pt_inception-2015-12-05-6726825d.pth: adds FID")
    parser.add_argument("--i3d", default=None, help="local i3d_pretrained_400.pt: adds FVD (>= 2 clips of >= 9 frames)")
    parser.add_argument("--mediapipe", action="store_true", help="run MediaPipe on the renders (HKC / HKV)")
    parser.add_argument("--no-csim", action="store_true", help="skip the dlib identity similarity")


def parse_compare(items: list[str]) -> list[tuple[str, str]]:
    out = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise InputError(f"--compare takes NAME=WORKDIR, got {item!r}")
        out.append((name.strip(), path.strip()))
    return out


def run(args, config) -> int:
    from avatar_jax.eval import report as report_lib
    from avatar_jax.eval import run as run_lib

    console = Console()
    compare = parse_compare(args.compare)
    if args.clips < 0 or args.frames < 0:
        raise InputError("--clips and --frames must be >= 0")
    if args.ablations and compare:
        raise InputError("--ablations trains its own rows; --compare is for evaluating existing runs")
    opts = report_lib.Options(csim=not args.no_csim, mediapipe=args.mediapipe)
    if args.syncnet:
        from avatar_jax.eval.syncnet import load_syncnet

        opts.syncnet = load_syncnet(args.syncnet)
    if args.lpips:
        from avatar_jax.eval.lpips import load_lpips

        opts.lpips = load_lpips(args.lpips, args.lpips_backbone, net=args.lpips_net)
    elif args.lpips_backbone:
        raise InputError("--lpips-backbone needs --lpips (the head weights, lpips/weights/v0.1/alex.pth)")
    if args.inception:
        from avatar_jax.eval.inception import load_inception

        opts.inception = load_inception(args.inception)
    if args.i3d:
        from avatar_jax.eval.fvd import i3d_feature_fn

        opts.fvd_features = i3d_feature_fn(args.i3d)
    tic = time.perf_counter()
    if args.ablations:  # the given config is the base every row starts from
        from avatar_jax.eval import ablations

        out = args.out or args.workdir
        rows = ablations.ablation_rows(config, baseline=not args.no_baseline)
        ablations.run_ablations(config, out, data_root=args.data, split=args.split, clips=args.clips,
                                frames=args.frames, opts=opts, rows=rows,
                                log=lambda m: console.print(m, soft_wrap=True))
        console.print(open(os.path.join(out, ablations.TABLE_FILE)).read())
        console.print(f"wrote {os.path.join(out, ablations.STATE_FILE)} and {os.path.join(out, ablations.TABLE_FILE)} "
                      f"in {time.perf_counter() - tic:.0f} s", soft_wrap=True)
        return 0
    del config  # each run's own config.json decides
    main = run_lib.load_run(args.workdir, name=args.name, data_root=args.data)
    root = args.data or main.config.data.root
    clips = run_lib.load_clips(root, args.split, args.clips, args.frames)
    runs = [main] + [run_lib.load_run(path, name=name, data_root=root) for name, path in compare]
    methods = {}
    for r in runs:
        console.print(f"rendering {len(clips)} clips with {r.name} (step {r.step})")
        methods[r.name] = [r.render(c) for c in clips]
    if not args.no_rest:
        methods["rest pose (no motion)"] = [main.render_rest(c) for c in clips]
    console.print(f"scoring {len(methods)} methods on {sum(len(c.frames) for c in clips)} frames")
    report = report_lib.score_methods(clips, methods, opts)
    report.update(split=args.split, data=os.path.abspath(root),
                  runs={r.name: dict(workdir=os.path.abspath(r.workdir), step=r.step) for r in runs})
    out = args.out or os.path.join(args.workdir, "eval")
    paths = report_lib.write_report(out, report, clips, methods, title=f"Evaluation on {args.split}")
    console.print(report_lib.markdown(report, title=f"Evaluation on {args.split}"))
    console.print(f"wrote {paths['json']}, {paths['markdown']} and {len(methods) + 1} frame sheets "
                  f"in {time.perf_counter() - tic:.0f} s", soft_wrap=True)
    return 0
