"""Does the tiny teacher know the audio-motion relation? Held-out audio -> sampled clips -> mouth opening.

    python -m avatar_jax.teacher.tiny_eval --workdir DIR --data DATA [--clips N] [--audio-scale S ...]

Held out: ``teacher.eval_sentences`` corpus sentences from ``teacher.eval_offset`` on (training used the first
``data.synthetic.sentences``), spoken by ``teacher.eval_voice`` (not a training voice), animated and rendered by
the same rig and camera as the training clips. Each clip is cut into windows of ``train.seq_len`` frames; for
every window the sampler (flow-matching Euler, ``teacher.sample_steps``) draws latents from the same noise
(a) with the window's audio and (b) with the audio dropped (the unconditional branch), and the VAE decodes them.

Mouth opening on 32 px frames (MediaPipe finds no face that small): a :class:`MouthMeter`, a ridge regression
from the grey pixels of the mouth box (the rig's mouth landmarks over the training clips, plus a margin) to
the lip gap in pixels (upper to lower lip keypoint), fitted on training frames *passed through the trained
VAE* (the image domain the samples live in). Its correlation with the true lip gap on held-out frames (raw
and VAE-reconstructed) is reported too, so the meter itself is checked.

A second meter, :class:`LatentMouthMeter`, reads the lip gap per latent frame straight off the sampled latents
(ridge regression fitted on encoded training windows), leaving the decoder's blur out.

Scores: Pearson correlation over all held-out frames between the sampled clips' mouth opening and (1) the
true lip gap of the rig for that audio and (2) the audio's RMS loudness per frame, for each condition (the
``latent_*`` entries: the same per latent frame, from the latent meter).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from avatar_jax.data import index, records, schema
from avatar_jax.errors import InputError
from avatar_jax.teacher import sampler
from avatar_jax.teacher.teacher import Conditions
from avatar_jax.train.vsd import teacher_audio

MOUTH = (schema.FACE_UPPER_LIP, schema.FACE_LOWER_LIP, schema.FACE_MOUTH_LEFT, schema.FACE_MOUTH_RIGHT)


def lip_gap(face: np.ndarray) -> np.ndarray:
    """``face (T, 478, 2)`` keypoints in pixels -> ``(T,)`` upper-to-lower lip distance in pixels."""
    return np.linalg.norm(face[:, schema.FACE_UPPER_LIP] - face[:, schema.FACE_LOWER_LIP], axis=-1)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.size < 3 or a.std() < 1e-12 or b.std() < 1e-12:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


@dataclasses.dataclass(frozen=True)
class MouthMeter:
    """Mouth opening (lip gap in pixels) read off frames: ``box = (top, bottom, left, right)`` pixel rows and
    columns, per-pixel standardisation ``mean``/``scale`` ``(P,)``, ridge weights ``w (P,)`` and ``bias``."""

    box: tuple[int, int, int, int]
    mean: np.ndarray
    scale: np.ndarray
    w: np.ndarray
    bias: float

    def features(self, frames: np.ndarray) -> np.ndarray:
        t, b, l, r = self.box
        grey = np.asarray(frames, np.float64)[:, t:b, l:r].mean(-1) / 255.0
        return grey.reshape(grey.shape[0], -1)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """``frames (N, H, W, 3)`` uint8 -> ``(N,)`` lip gap in pixels."""
        return ((self.features(frames) - self.mean) / self.scale) @ self.w + self.bias

    @classmethod
    def fit(cls, frames: np.ndarray, face: np.ndarray, *, margin: int = 2, ridge: float = 10.0) -> MouthMeter:
        """Fit on ``frames (N, H, W, 3)`` uint8 with their face keypoints ``(N, 478, 2)`` (pixels)."""
        pts = face[:, list(MOUTH)].reshape(-1, 2)
        if frames.shape[0] < 10 or not np.isfinite(pts).all():
            raise InputError(f"the mouth meter needs >= 10 frames with face keypoints, got {frames.shape[0]}")
        h, w = frames.shape[1:3]
        lo, hi = np.floor(pts.min(0)) - margin, np.ceil(pts.max(0)) + margin
        box = (int(max(lo[1], 0)), int(min(hi[1] + 1, h)), int(max(lo[0], 0)), int(min(hi[0] + 1, w)))
        meter = cls(box, np.zeros(1), np.ones(1), np.zeros(1), 0.0)
        x = meter.features(frames)
        mean, scale = x.mean(0), x.std(0) + 1e-3
        xs = (x - mean) / scale
        y = lip_gap(face)
        w_ = np.linalg.solve(xs.T @ xs + ridge * np.eye(xs.shape[1]), xs.T @ (y - y.mean()))
        return cls(box, mean, scale, w_, float(y.mean()))


def per_latent_frame(values: np.ndarray, k: int) -> np.ndarray:
    """``(N, 1 + k(F-1))`` per-video-frame values -> ``(N, F)``: latent frame 0 keeps frame 0, latent f the mean
    of the ``k`` frames it encodes (the causal VAE's grouping)."""
    n, t = values.shape
    rest = values[:, 1:].reshape(n, (t - 1) // k, k).mean(-1)
    return np.concatenate([values[:, :1], rest], axis=1)


@dataclasses.dataclass(frozen=True)
class LatentMouthMeter:
    """Lip gap (pixels, per latent frame) read off normalised latents ``(N, F, h, w, z)`` by ridge regression
    over every latent pixel of a frame: the decoder's blur left out (the VAE is the tiny teacher's weakest part)."""

    mean: np.ndarray
    scale: np.ndarray
    w: np.ndarray
    bias: float

    def __call__(self, latents: np.ndarray) -> np.ndarray:
        """``(N, F, h, w, z)`` -> ``(N, F)``."""
        x = np.asarray(latents, np.float64).reshape(latents.shape[0] * latents.shape[1], -1)
        return (((x - self.mean) / self.scale) @ self.w + self.bias).reshape(latents.shape[:2])

    @classmethod
    def fit(cls, latents: np.ndarray, gap: np.ndarray, ridge: float = 100.0) -> LatentMouthMeter:
        """``latents (N, F, h, w, z)`` with the lip gap per latent frame ``gap (N, F)``."""
        x = np.asarray(latents, np.float64).reshape(latents.shape[0] * latents.shape[1], -1)
        y = np.asarray(gap, np.float64).ravel()
        mean, scale = x.mean(0), x.std(0) + 1e-3
        xs = (x - mean) / scale
        w = np.linalg.solve(xs.T @ xs + ridge * np.eye(xs.shape[1]), xs.T @ (y - y.mean()))
        return cls(mean, scale, w, float(y.mean()))


def training_frames(root: str, max_frames: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``max_frames`` frames ``(N, H, W, 3)`` and face keypoints ``(N, 478, 2)`` of the train split."""
    rng = np.random.default_rng(seed)
    frames, faces = [], []
    for e in index.clips_in_split(index.load_index(root), "train"):
        r = records.ClipReader(root, e["clip_id"])
        w = r.window(0, len(r))
        r.close()
        frames.append(w["frame"])
        faces.append(w["face"])
    frames, faces = np.concatenate(frames), np.concatenate(faces)
    keep = np.sort(rng.permutation(frames.shape[0])[:max_frames])
    return frames[keep], faces[keep]


def autoencode(vae, frames: np.ndarray, seq_len: int) -> np.ndarray:
    """Frames ``(N, H, W, 3)`` uint8 through the VAE (windows of ``seq_len``; the tail that fills no window
    is dropped) -> ``(N', H, W, 3)`` uint8."""
    n = frames.shape[0] // seq_len
    x = jnp.asarray(frames[: n * seq_len].reshape(n, seq_len, *frames.shape[1:]), jnp.float32) / 127.5 - 1.0
    rec = jax.jit(lambda v: vae.decode(vae.latent_mean(v)))(x)
    return np.asarray(jnp.round((rec + 1.0) * 127.5)).astype(np.uint8).reshape(-1, *frames.shape[1:])


def _encode(vae, windows: np.ndarray) -> np.ndarray:
    """``(N, T, H, W, 3)`` uint8 windows -> normalised posterior means ``(N, F, h, w, z)``."""
    x = jnp.asarray(windows, jnp.float32) / 127.5 - 1.0
    return np.asarray(jax.jit(lambda v: vae.normalize(vae.latent_mean(v)))(x))


def fit_latent_meter(config, vae, root: str, max_windows: int = 200) -> LatentMouthMeter:
    """:class:`LatentMouthMeter` fitted on (up to ``max_windows``) training windows encoded by the VAE."""
    from avatar_jax.train import data

    source = data.make_source(config, root, "train")
    rows = np.random.default_rng(0).permutation(len(source))[:max_windows]
    items = [source[int(i)] for i in rows]
    latents = _encode(vae, np.stack([it["frame"] for it in items]))
    gap = np.stack([lip_gap(it["face"]) for it in items])
    return LatentMouthMeter.fit(latents, per_latent_frame(gap, vae.spec.temporal_factor))


def held_out_clips(config, root: str, count: int | None = None, *, voice: str | None = None,
                   offset: int | None = None, seed: int = 900) -> list:
    """Synthetic clips of unseen sentences in the held-out voice, rendered like the dataset's training clips
    (same rig and camera: the dataset's first clip's camera is checked against it). ``voice``, ``offset`` (first
    corpus sentence) and ``seed`` (clip ``k`` uses ``seed + k``) default to the teacher's held-out set."""
    from avatar_jax.data import corpus, rig, synthetic

    tc, syn = config.teacher, config.data.synthetic
    first = index.clips_in_split(index.load_index(root), "train")[0]
    meta = schema.ClipMeta.load(schema.clip_paths(root, first["clip_id"])[1])
    avatar = meta.extra.get("avatar", "synthetic")
    r = rig.build_rig(synthetic.figure_from_avatar(avatar, int(syn.num_gaussians), seed=0), seed=0)
    cam = synthetic.frame_camera(r, meta.width, str(syn.framing))
    if not np.allclose(np.asarray(cam.viewmat), np.asarray(meta.viewmat), atol=1e-4):
        raise InputError(f"dataset {root!r} was not made with this config's data.synthetic settings "
                         f"(num_gaussians={syn.num_gaussians}, framing={syn.framing!r}): its camera differs")
    cap = synthetic.render_capacity(r, cam)
    out = []
    for k in range(int(tc.eval_sentences) if count is None else count):
        _, text = corpus.sentences(1, offset=int(tc.eval_offset if offset is None else offset) + k)[0]
        out.append(synthetic.make_clip(r, text, str(tc.eval_voice if voice is None else voice), size=meta.width,
                                       framing=str(syn.framing), seed=seed + k, capacity=cap))
    return out


def sample_windows(teacher, vae, null_text, audio_feats: jax.Array, noise: jax.Array, *, steps: int, shift: float,
                   audio_scale: float) -> np.ndarray:
    """Latents from ``noise (N, F, h, w, z)`` conditioned on ``audio_feats (N, T, C)`` (zeros: dropped) ->
    ``(latents (N, F, h, w, z), decoded frames (N, T, H, W, 3) uint8)``."""
    n = noise.shape[0]
    cond = Conditions(text=jnp.broadcast_to(null_text, (n, *null_text.shape[1:])), null_text=null_text,
                      audio=audio_feats)

    @jax.jit
    def run(noise, feats):
        c = cond._replace(audio=feats)
        z = sampler.sample(teacher, noise, c, num_steps=steps, shift=shift, text_scale=1.0, audio_scale=audio_scale)
        return z, sampler.decode_frames(vae, z)

    z, frames = run(noise, audio_feats)
    return np.asarray(z), np.asarray(frames)


def evaluate(workdir: str, root: str, *, clips: int | None = None, audio_scales: tuple[float, ...] | None = None,
             seed: int = 0, out: str | None = None) -> dict:
    """The scores of the module docstring as a dict (also written to ``out`` as JSON when given)."""
    from avatar_jax.teacher.tiny_training import load_tiny_teacher

    config, teacher, vae, null_text = load_tiny_teacher(workdir)
    tc, seq_len, fps = config.teacher, int(config.train.seq_len), float(config.data.fps)
    scales = tuple(audio_scales) if audio_scales else (float(tc.audio_scale),)
    frames, faces = training_frames(root)
    rec = autoencode(vae, frames, seq_len)
    meter = MouthMeter.fit(rec, faces[: rec.shape[0]])
    latent_meter = fit_latent_meter(config, vae, root)
    held = held_out_clips(config, root, clips)
    spf = int(round(schema.SAMPLE_RATE / fps))
    gt_gap, gt_rms, gt_raw, gt_rec, windows, gap_windows, rms_windows, clip_frames = [], [], [], [], [], [], [], []
    for clip in held:
        n = clip.frames.shape[0] // seq_len
        t = n * seq_len
        gt_gap.append(lip_gap(clip.keypoints["face"][:t]))
        a = clip.audio[: t * spf].reshape(t, spf)
        gt_rms.append(np.sqrt(np.mean(np.square(a), axis=1)))
        gt_raw.append(meter(clip.frames[:t]))
        gt_rec.append(meter(autoencode(vae, clip.frames[:t], seq_len)))
        windows.append(clip.audio[: t * spf].reshape(n, seq_len * spf))
        gap_windows.append(gt_gap[-1].reshape(n, seq_len))
        rms_windows.append(gt_rms[-1].reshape(n, seq_len))
        clip_frames.append(clip.frames[:t].reshape(n, seq_len, *clip.frames.shape[1:]))
    held_latents = _encode(vae, np.concatenate(clip_frames))
    gap, rms = np.concatenate(gt_gap), np.concatenate(gt_rms)
    audio = jnp.asarray(np.concatenate(windows))
    feats = teacher_audio(audio, seq_len, int(tc.n_mels), fps)
    k = vae.spec.temporal_factor
    latent_shape = (audio.shape[0], 1 + (seq_len - 1) // k, config.data.synthetic.size // vae.spec.spatial_factor,
                    config.data.synthetic.size // vae.spec.spatial_factor, vae.spec.z_dim)
    noise = jax.random.normal(jax.random.key(seed), latent_shape)
    steps, shift = int(tc.sample_steps), float(tc.sample_shift)
    result = {
        "kind": "tiny teacher (synthetic-data teacher, not Wan2.1)", "workdir": workdir,
        "held_out": {"voice": str(tc.eval_voice), "clips": len(held), "frames": int(gap.size),
                     "sentences_from": int(tc.eval_offset), "windows": int(audio.shape[0]), "window_frames": seq_len},
        "sampler": {"steps": steps, "shift": shift},
        "meter": {"box": list(meter.box),
                  "corr_true_gap_on_held_out_frames": _corr(np.concatenate(gt_raw), gap),
                  "corr_true_gap_on_vae_reconstructions": _corr(np.concatenate(gt_rec), gap)},
        "true_gap_vs_audio_rms": _corr(gap, rms),
        "conditions": {},
    }
    samples = {}
    dropped = sample_windows(teacher, vae, null_text, jnp.zeros_like(feats), noise, steps=steps, shift=shift,
                             audio_scale=1.0)
    samples["audio_dropped"] = dropped
    for s in scales:
        samples[f"audio_scale_{s:g}"] = sample_windows(teacher, vae, null_text, feats, noise, steps=steps, shift=shift,
                                                       audio_scale=s)
    gap_l = per_latent_frame(np.concatenate(gap_windows), k)
    rms_l = per_latent_frame(np.concatenate(rms_windows), k)
    result["latent_meter"] = {"corr_true_gap_on_held_out_latents": _corr(latent_meter(held_latents), gap_l)}
    for name, (z, video) in samples.items():
        opening = meter(video.reshape(-1, *video.shape[2:]))
        opening_l = latent_meter(z)
        result["conditions"][name] = {"corr_true_gap": _corr(opening, gap), "corr_audio_rms": _corr(opening, rms),
                                      "opening_std_px": float(opening.std()),
                                      "latent_corr_true_gap": _corr(opening_l, gap_l),
                                      "latent_corr_audio_rms": _corr(opening_l, rms_l)}
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            json.dump(result, f, indent=1)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True, help="a tiny-teacher run folder")
    p.add_argument("--data", required=True, help="the prepared synthetic dataset it was trained on")
    p.add_argument("--clips", type=int, default=None, help="held-out clips (default: teacher.eval_sentences)")
    p.add_argument("--audio-scale", type=float, action="append", default=None, help="audio guidance (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="JSON file (default: WORKDIR/eval.json)")
    args = p.parse_args(argv)
    try:
        res = evaluate(args.workdir, args.data, clips=args.clips, audio_scales=args.audio_scale, seed=args.seed,
                       out=args.out or os.path.join(args.workdir, "eval.json"))
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
