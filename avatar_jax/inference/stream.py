"""Stream audio through a bundle in chunks: audio ``(S,)`` -> batches of frames ``(n,H,W,3)``, bounded memory.

The driving tokens of the whole clip come from one encoder pass (``(T, d)``: 6 KB per second at
d=64, so never the memory problem; one pass also keeps the encoder's per-utterance log-mel floor and
its frame positions exactly as in training). The model then runs ``chunk`` frames at a time,
carrying its state across chunks (equal to one pass), and each chunk is rendered and handed out
while the next chunk's model runs: memory is two chunks of Gaussians and one of images, whatever the
clip's length.

Output frame rate: the model runs at the bundle's rate; an output frame ``j`` at ``fps`` shows the
model frame whose time window contains the output frame's centre, ``(j + 0.5) / fps``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from avatar_jax.errors import InputError
from avatar_jax.export.loader import Bundle
from avatar_jax.inference.cameras import CameraPath

# Render calls per chunk, in flight together: XLA:CPU runs each call's frames one after the other, mostly
# on one core, so two calls keep both cores of a 2-core machine busy.
RENDER_CALLS = 2


@dataclasses.dataclass
class StreamStats:
    """Frames produced and seconds spent per stage (encoder, model, render) and in all, wall and CPU."""

    frames: int = 0
    model_frames: int = 0
    encode_s: float = 0.0  # wall seconds per stage (split cleanly only with ``profile=True``: otherwise
    model_s: float = 0.0  # the model's time shows up where its results are first needed)
    render_s: float = 0.0
    total_s: float = 0.0
    encode_cpu_s: float = 0.0  # process CPU seconds (all threads) in the same spans
    model_cpu_s: float = 0.0
    render_cpu_s: float = 0.0
    total_cpu_s: float = 0.0

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.total_s if self.total_s > 0 else 0.0


@dataclasses.dataclass(frozen=True)
class FrameBatch:
    """Output frames ``start .. start+n-1``: ``rgb (n,H,W,3)`` float32 in [0,1] and, if asked, their Gaussians."""

    start: int
    rgb: np.ndarray
    gaussians: dict[str, np.ndarray] | None


def num_output_frames(num_samples: int, sample_rate: int, fps: float) -> int:
    """``ceil(duration x fps)``: every sample is shown."""
    return max(1, math.ceil(num_samples * fps / sample_rate - 1e-9))


def model_frames_for(outputs: np.ndarray, fps: float, model_fps: float, model_frames: int) -> np.ndarray:
    """Model frame shown by each output frame index ``(F,)`` (the one whose window holds its centre)."""
    return np.minimum(np.floor((outputs + 0.5) * model_fps / fps).astype(np.int64), model_frames - 1)


def _pad_rows(x: jax.Array, n: int) -> jax.Array:
    """Pad axis 0 to ``n`` rows by repeating the last row (the extra rows are rendered and dropped)."""
    return x if x.shape[0] == n else jnp.concatenate([x, jnp.repeat(x[-1:], n - x.shape[0], axis=0)], axis=0)


def stream_frames(bundle: Bundle, audio: np.ndarray, path: CameraPath, *, fps: float | None = None,
                  chunk: int = 16, with_gaussians: bool = False, stats: StreamStats | None = None,
                  profile: bool = False, render_calls: int = RENDER_CALLS) -> Iterator[FrameBatch]:
    """Yield the talking video of ``audio (S,)`` (float32 at ``bundle.sample_rate``) as frame batches.

    ``path``: the cameras (its width x height must be one of the bundle's resolutions). ``fps``:
    output frame rate (default: the bundle's). ``chunk``: model frames per step (memory knob).
    ``stats`` is filled in as the stream goes. The stages run asynchronously: the next chunk's model and
    this chunk's render (split into ``render_calls`` calls of equal size) are in flight together, so both
    CPU cores work. ``profile=True`` waits for each stage in turn instead, so that ``stats`` splits the
    time into encoder, model and render (slower; the images are the same).
    """
    stats = stats if stats is not None else StreamStats()
    audio = np.asarray(audio, np.float32)
    if audio.ndim != 1 or audio.size == 0:
        raise InputError(f"audio must be mono samples (S,) with S > 0, got shape {audio.shape}")
    if not np.all(np.isfinite(audio)):
        raise InputError("audio contains NaN or infinite samples")
    if chunk < 1:
        raise InputError(f"chunk must be >= 1 frame, got {chunk}")
    if render_calls < 1:
        raise InputError(f"render_calls must be >= 1, got {render_calls}")
    fps = float(fps or bundle.fps)
    if not 0 < fps <= 240:
        raise InputError(f"fps must be in (0, 240], got {fps}")
    resolution = (path.width, path.height)
    if resolution not in bundle.resolutions:
        raise InputError(f"bundle renders {bundle.resolution_list()}, not {path.width}x{path.height}")
    spf = bundle.samples_per_frame
    clock = _Clock(stats)

    t_model = -(-audio.size // spf)
    padded = np.zeros(t_model * spf, np.float32)
    padded[:audio.size] = audio
    with clock("encode"):
        driving = jax.block_until_ready(bundle.encode(padded))  # (T, d)

    n_out = num_output_frames(audio.size, bundle.sample_rate, fps)
    shown = model_frames_for(np.arange(n_out), fps, bundle.fps, t_model)
    # A short last chunk is padded to ``chunk`` (one compiled shape); the model is causal, so the padding
    # changes no real frame.
    starts = list(range(0, t_model, chunk))
    part = -(-chunk // render_calls)  # frames per render call (the last call's are padded: one shape)
    carry = bundle.initial_carry
    motion = None if profile else bundle.motion(carry, _pad_rows(driving[:chunk], chunk))
    for i, s in enumerate(starts):
        with clock("model"):
            if profile:  # each stage waited for in turn: this model starts after the last render
                motion = bundle.motion(carry, _pad_rows(driving[s:s + chunk], chunk))
            gauss, carry = motion
            if profile:
                gauss = jax.block_until_ready(gauss)
        stats.model_frames += min(chunk, t_model - s)
        outputs = np.nonzero((shown >= s) & (shown < s + chunk))[0]
        with clock("render"):
            pending = []
            for g0 in range(0, outputs.size, part):  # every call in flight before the first result is read
                group = outputs[g0:g0 + part]
                local = jnp.asarray(_pad_rows(jnp.asarray(shown[group] - s), part))
                selected = {k: v[local] for k, v in gauss.items()}
                viewmats, Ks = path.cameras(np.concatenate([group, np.repeat(group[-1:], part - group.size)]))
                pending.append((group, selected, bundle.frames(selected, viewmats, Ks, resolution)))
            if not profile and i + 1 < len(starts):  # the next chunk's model runs beside this render
                nxt = starts[i + 1]
                motion = bundle.motion(carry, _pad_rows(driving[nxt:nxt + chunk], chunk))
            if not pending:  # a low output frame rate can skip a whole chunk
                continue
            rgb = np.concatenate([np.asarray(out[0][:group.size]) for group, _, out in pending])
            overflow = np.concatenate([np.asarray(out[1][:group.size]) for group, _, out in pending])
        if overflow.any():
            bad = int(outputs[np.argmax(overflow)])
            raise InputError(f"frame {bad} needs more render slots than the bundle's capacity at "
                             f"{path.width}x{path.height}; export again with a larger --capacity-factor")
        host = None
        if with_gaussians:
            host = {k: np.concatenate([np.asarray(sel[k])[:group.size] for group, sel, _ in pending])
                    for k in gauss}
        stats.frames += outputs.size
        clock.tick()
        yield FrameBatch(int(outputs[0]), rgb, host)
    clock.tick()


class _Clock:
    """Adds wall and process CPU seconds (all threads) per stage to a :class:`StreamStats`."""

    def __init__(self, stats: StreamStats):
        self.stats = stats
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()

    @contextlib.contextmanager
    def __call__(self, stage: str):
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        st = self.stats
        setattr(st, f"{stage}_s", getattr(st, f"{stage}_s") + time.perf_counter() - wall)
        setattr(st, f"{stage}_cpu_s", getattr(st, f"{stage}_cpu_s") + time.process_time() - cpu)

    def tick(self) -> None:
        self.stats.total_s = time.perf_counter() - self.wall0
        self.stats.total_cpu_s = time.process_time() - self.cpu0
