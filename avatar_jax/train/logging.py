"""What a training run shows and leaves behind: rich console progress, TensorBoard scalars and frame grids.

Only process 0 writes (``enabled=False`` elsewhere). The console line carries the loss terms, step
time, frames/s and ETA; ``workdir/tb`` holds the TensorBoard event files.
"""

from __future__ import annotations

import os

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def compiled_stats(compiled) -> dict:
    """Per-device memory (bytes) and FLOPs of a compiled step (``jit(...).lower(...).compile()``)."""
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    out = {"flops": float(cost.get("flops", 0.0)) if cost else 0.0}
    if mem is not None:
        for name in ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes", "temp_size_in_bytes",
                     "generated_code_size_in_bytes"):
            out[name] = int(getattr(mem, name, 0))
        out["peak_bytes"] = out["argument_size_in_bytes"] + out["output_size_in_bytes"] - out[
            "alias_size_in_bytes"] + out["temp_size_in_bytes"]
    return out


def frame_grid(rendered: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``(T,H,W,3)`` renders over ``(T,H,W,3)`` clip frames -> one ``(2H, T*W, 3)`` image in [0,1]."""
    top = np.concatenate(list(np.clip(rendered, 0, 1)), axis=1)
    bottom = np.concatenate(list(np.clip(target, 0, 1)), axis=1)
    return np.concatenate([top, bottom], axis=0)


class TrainLogger:
    """``with TrainLogger(workdir, total, start) as log: log.step(...)``; prints stay above the bar."""

    def __init__(self, workdir: str, total_steps: int, start_step: int, *, enabled: bool = True,
                 progress: bool = True):
        self.enabled = enabled
        self.console = Console(quiet=not enabled)
        self.writer = None
        if enabled:
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(os.path.join(workdir, "tb"))
        self.progress = Progress(TextColumn("[bold]train[/bold]"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"),
                                 TimeRemainingColumn(), console=self.console, disable=not (enabled and progress),
                                 transient=False)
        self.task = self.progress.add_task("train", total=total_steps, completed=start_step, info="compiling")

    def __enter__(self) -> TrainLogger:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()
        if self.writer is not None:
            self.writer.close()

    def print(self, message: str) -> None:
        self.console.print(message)

    def advance(self, step: int, loss: float) -> None:
        self.progress.update(self.task, completed=step, info=f"loss {loss:.4f}")

    def scalars(self, step: int, metrics: dict[str, float], step_time: float, frames_per_s: float) -> None:
        """One log interval: TensorBoard scalars and the console line (loss terms, step time, frames/s)."""
        terms = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k not in ("ok", "bad_streak"))
        info = f"{terms}  {step_time * 1000:.0f} ms/step  {frames_per_s:.1f} frames/s"
        self.progress.update(self.task, completed=step, info=f"loss {metrics['loss']:.4f}")
        self.console.print(f"step {step}: {info}")
        if self.writer is not None:
            for k, v in metrics.items():
                self.writer.add_scalar(f"train/{k}", float(v), step)
            self.writer.add_scalar("perf/step_time_s", step_time, step)
            self.writer.add_scalar("perf/frames_per_s", frames_per_s, step)

    def eval_scalars(self, step: int, scores: dict[str, float]) -> None:
        if self.writer is not None:
            for k, v in scores.items():
                self.writer.add_scalar(f"eval/{k}", float(v), step)

    def image(self, step: int, grid: np.ndarray) -> None:
        """A ``(H,W,3)`` image in [0,1] (see :func:`frame_grid`)."""
        if self.writer is not None:
            self.writer.add_image("frames/rendered_over_clip", np.asarray(grid, np.float32), step, dataformats="HWC")
