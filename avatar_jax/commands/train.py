"""``avatar-jax train --config configs/tiny.py --workdir DIR [--data DIR]``: the training job.

With ``train.target = "teacher"`` (``configs/teacher_tiny.py``) it trains the tiny video-diffusion teacher
instead (:mod:`avatar_jax.teacher.tiny_training`).

Arguments -> :func:`avatar_jax.train.loop.train`. Resumes from the workdir's latest checkpoint; the
summary (losses, held-out scores, compiled memory/FLOPs) lands in ``DIR/summary.json``.
"""

from __future__ import annotations


def add_arguments(parser):
    parser.add_argument("--workdir", default=None, help="run folder: checkpoints, TensorBoard, summary "
                                                        "(default: config.train.checkpoint_dir)")
    parser.add_argument("--data", default=None, help="prepared dataset folder (default: config.data.root)")
    parser.add_argument("--no-progress", action="store_true", help="no live progress bar (log lines only)")


def run(args, config) -> int:
    from avatar_jax.teacher import tiny_training
    from avatar_jax.train.loop import train

    workdir = args.workdir or config.train.checkpoint_dir
    if tiny_training.is_teacher_config(config):  # configs/teacher_tiny.py: the tiny video-diffusion teacher
        s = tiny_training.train_teacher(config, workdir, data_root=args.data, progress=not args.no_progress)
        losses = "".join(f", {name} loss {s[name + '_loss_first']:.4f} -> {s[name + '_loss_final']:.4f}"
                         for name in ("vae", "dit") if s[name + "_loss_final"] is not None)
        print(f"train (tiny teacher): {s['stopped']} at step {s['step']}{losses}; wrote {workdir}/summary.json")
        return 0
    summary = train(config, workdir, data_root=args.data, progress=not args.no_progress)
    held = summary["held_out"]
    scores = "".join(f"; held-out {k}: " + ", ".join(f"{n} {v:.3f}" for n, v in s.items() if n != "clips")
                     for k, s in held.items())
    losses = (f", loss {summary['first_loss']:.4f} -> {summary['final_loss']:.4f}" if summary["losses"] else "")
    print(f"train: {summary['stopped']} at step {summary['step']}{losses}, {summary['bad_steps']} skipped step(s)"
          f"{scores}; wrote {workdir}/summary.json")
    return 0
