"""``avatar-jax demo``: the main job on the embedded default config, end to end on CPU, offline.

1. Speech: corpus sentences spoken by eSpeak in several voices (16 kHz audio + phoneme timings).
2. Teacher motion: the synthetic rig animates a person-shaped Gaussian avatar from the phoneme
   timings (visemes for the jaw and lips, blinks, nods, beat gestures) - the offline stand-in for the
   paper's video-diffusion teacher, whose audio-motion relation is known exactly.
3. Training: the audio-driven avatar (embedded audio encoder -> gated fusion -> particle deformer ->
   identity-adaptive skinning -> Gaussian head) learns, from the audio alone, to move the Gaussians
   as the teacher does (L1 on posed Gaussian centres, Adam).
4. Evaluation on a held-out sentence and voice: how much of the teacher's motion the model
   reproduces (error relative to standing still), and the correlation of mouth opening over time.
5. Output: ``talking.mp4`` (model | teacher side by side, with the held-out audio), ``frames.png``
   (a strip of frames) and ``metrics.json`` in ``config.demo.out``.
"""

from __future__ import annotations

import json
import os
import time

import imageio.v3 as iio
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from rich.console import Console
from rich.progress import Progress

from avatar_jax.audio.tts import synthesize_detailed
from avatar_jax.data import corpus, motion, rig, synthetic
from avatar_jax.export.video import write_video
from avatar_jax.model.canonical import CanonicalAvatar, bind_to_particles
from avatar_jax.model.talking import TalkingAvatar
from avatar_jax.render import render

SAMPLE_RATE = 16000


def add_arguments(parser):
    parser.add_argument("--out", default=None, help="output folder (default: config.demo.out)")


def farthest_points(points: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """Indices of ``count`` points spread over ``points (N,3)`` (greedy farthest-point sampling)."""
    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(len(points)))]
    dist = np.linalg.norm(points - points[chosen[0]], axis=1)
    for _ in range(count - 1):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(points - points[nxt], axis=1))
    return np.asarray(chosen)


def canonical_from_rig(r: rig.Rig, num_particles: int, bind_k: int) -> CanonicalAvatar:
    """The rig's Gaussians as a canonical avatar; particles spread over the body, denser on the face."""
    fig = r.figure
    face = np.where(fig.part == 1)[0]
    n_face = min(len(face), num_particles // 2)
    idx = np.concatenate([face[farthest_points(fig.means[face], n_face)],
                          farthest_points(fig.means, num_particles - n_face, seed=1)])
    particles = fig.means[idx].astype(np.float32)
    bind_index, bind_weight = bind_to_particles(fig.means, particles, bind_k)
    eps = 1e-4
    opac = np.clip(fig.opacities, eps, 1 - eps)
    return CanonicalAvatar(
        means=jnp.asarray(fig.means, jnp.float32), log_scales=jnp.log(jnp.asarray(fig.scales, jnp.float32)),
        quats=jnp.asarray(fig.quats, jnp.float32), opacity_logits=jnp.asarray(np.log(opac / (1 - opac)), jnp.float32),
        colors=jnp.asarray(fig.colors, jnp.float32), part=jnp.asarray(fig.part, jnp.int32),
        bind_index=jnp.asarray(bind_index), bind_weight=jnp.asarray(bind_weight),
        particle_rest=jnp.asarray(particles), particle_part=jnp.asarray(fig.part[idx], jnp.int32),
    ).sorted_by_part()


def teacher_clip(r: rig.Rig, text: str, voice: str, fps: float, seed: int) -> dict:
    """Speech and the rig's motion for it: audio (S,), controls, posed means (T,N,3) and quats."""
    speech = synthesize_detailed(text, voice)
    frames = int(np.ceil(speech.audio.size * fps / SAMPLE_RATE))
    audio = np.pad(speech.audio, (0, int(round(frames * SAMPLE_RATE / fps)) - speech.audio.size))
    controls = motion.from_speech(speech.phonemes, audio, frames, fps=fps, seed=seed)
    means, quats = rig.pose(r, rig.bone_transforms(r, controls))
    return dict(text=text, voice=voice, audio=audio.astype(np.float32), controls=controls, means=means, quats=quats)


def sorted_targets(clip: dict, order: np.ndarray) -> jax.Array:
    return jnp.asarray(clip["means"])[:, order]


def mouth_opening(means: np.ndarray, r: rig.Rig, lower_lip: np.ndarray) -> np.ndarray:
    """Per-frame mean drop of the lower-lip Gaussians below their rest height: ``(T,N,3) -> (T,)``."""
    rest_y = r.figure.means[lower_lip, 1]
    return (rest_y[None] - means[:, lower_lip, 1]).mean(axis=1)


def run(args, config) -> int:
    console = Console()
    c, d = config, config.demo
    out_dir = args.out or d.out
    os.makedirs(out_dir, exist_ok=True)
    start = time.perf_counter()

    # 1-2. Speech and teacher motion.
    r = rig.build_rig(synthetic.figure_from_avatar("synthetic", d.num_gaussians, seed=c.seed), seed=c.seed)
    fig = r.figure  # the avatar plus the rig's mouth interior, lips, pupils and lids
    texts = [s for _, s in corpus.sentences(d.train_sentences + 1, offset=c.seed)]
    voices = list(d.voices)
    train = [teacher_clip(r, texts[k], voices[k % (len(voices) - 1)], c.audio.fps, c.seed + k)
             for k in range(d.train_sentences)]
    held_out = teacher_clip(r, texts[-1], voices[-1], c.audio.fps, c.seed + 99)
    console.print(f"[bold]demo[/bold]: {len(train)} training sentences, held-out: [italic]{held_out['text']}[/] "
                  f"({held_out['voice']}), {fig.means.shape[0]} Gaussians")

    # 3. The audio-driven avatar learns the teacher's motion from the audio alone.
    avatar = canonical_from_rig(r, c.model.num_particles, c.model.bind_k)
    order = np.argsort(np.asarray(fig.part), kind="stable")  # sorted_by_part() uses the same order
    model = TalkingAvatar(c, nnx.Rngs(c.seed))
    graphdef, params = nnx.split(model, nnx.Param)
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(d.learning_rate))
    opt_state = opt.init(params)

    def loss_fn(p, audio, target):
        out, _ = nnx.merge(graphdef, p)(avatar, audio, target.shape[0])
        return jnp.mean(jnp.abs(out.means - target))

    @jax.jit
    def step(p, s, audio, target):
        loss, grads = jax.value_and_grad(loss_fn)(p, audio, target)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    # Cut clips into windows of equal length so one compiled step serves every clip.
    window = d.window_frames
    samples_per_frame = SAMPLE_RATE / c.audio.fps
    windows = []
    for clip in train:
        target = sorted_targets(clip, order)
        for s in range(0, max(target.shape[0] - window, 0) + 1, max(window // 2, 1)):
            a0, a1 = int(round(s * samples_per_frame)), int(round((s + window) * samples_per_frame))
            if a1 <= clip["audio"].size:
                windows.append((jnp.asarray(clip["audio"][a0:a1]), target[s:s + window]))
    rng = np.random.default_rng(c.seed)
    losses = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("training", total=d.train_steps)
        for _ in range(d.train_steps):
            audio, target = windows[int(rng.integers(len(windows)))]
            params, opt_state, loss = step(params, opt_state, audio, target)
            losses.append(float(loss))
            progress.update(task, advance=1, description=f"training  L1 {np.mean(losses[-10:]) * 1000:.2f} mm")
    if not np.isfinite(losses[-1]):
        raise RuntimeError(f"training diverged (loss {losses[-1]}); lower demo.learning_rate")

    # 4. Held-out evaluation.
    model = nnx.merge(graphdef, params)
    frames = held_out["means"].shape[0]
    predicted, _ = jax.jit(lambda a: model(avatar, a, frames))(jnp.asarray(held_out["audio"]))
    target = np.asarray(sorted_targets(held_out, order))
    pred = np.asarray(predicted.means)
    rest = np.asarray(avatar.means)[None]
    err_model = float(np.abs(pred - target).mean())
    err_still = float(np.abs(rest - target).mean())
    lower_lip = np.where((np.abs(fig.means[:, 0] - r.mouth[0]) < r.mouth_half_width)
                         & (fig.means[:, 1] < r.mouth[1]) & (fig.means[:, 1] > r.mouth[1] - 0.03))[0]
    if lower_lip.size == 0:
        raise RuntimeError("the rig has no Gaussians under the mouth to measure its opening")
    inv = np.argsort(order)  # canonical (sorted) index of each figure Gaussian
    open_teacher = mouth_opening(np.asarray(held_out["means"]), r, lower_lip)
    open_model = mouth_opening(pred[:, inv], r, lower_lip)
    sync = float(np.corrcoef(open_teacher, open_model)[0, 1]) if open_model.std() > 1e-9 else 0.0

    # 5. Render model | teacher side by side with the held-out audio.
    cam = synthetic.frame_camera(r, d.size, d.framing)
    capacity = synthetic.render_capacity(r, cam)
    draw = jax.jit(lambda m, q: render(m, q, jnp.exp(avatar.log_scales), jax.nn.sigmoid(avatar.opacity_logits),
                                       avatar.colors, cam, background=(0.92, 0.92, 0.9), capacity=capacity).rgb)
    teacher_means, teacher_quats = np.asarray(held_out["means"])[:, order], np.asarray(held_out["quats"])[:, order]
    video = []
    for t in range(frames):
        left = draw(predicted.means[t], predicted.quats[t])
        right = draw(jnp.asarray(teacher_means[t]), jnp.asarray(teacher_quats[t]))
        video.append(np.concatenate([np.asarray(left), np.asarray(right)], axis=1))
    video = np.stack(video)
    write_video(os.path.join(out_dir, "talking.mp4"), video, c.audio.fps, held_out["audio"], SAMPLE_RATE)
    picks = np.linspace(0, frames - 1, min(6, frames)).astype(int)
    iio.imwrite(os.path.join(out_dir, "frames.png"),
                (np.clip(np.concatenate(list(video[picks]), axis=0), 0, 1) * 255).astype(np.uint8))
    metrics = dict(
        held_out_text=held_out["text"], held_out_voice=held_out["voice"], frames=frames,
        train_steps=d.train_steps, final_train_l1_m=float(np.mean(losses[-10:])), first_train_l1_m=losses[0],
        held_out_l1_model_m=err_model, held_out_l1_standing_still_m=err_still,
        motion_explained=1.0 - err_model / err_still if err_still > 0 else 0.0,
        mouth_opening_correlation=sync, seconds=time.perf_counter() - start,
    )
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    console.print(
        f"trained {d.train_steps} steps: L1 {losses[0] * 1000:.2f} -> {metrics['final_train_l1_m'] * 1000:.2f} mm; "
        f"held-out L1 {err_model * 1000:.2f} mm vs {err_still * 1000:.2f} mm standing still; "
        f"mouth-opening correlation {sync:.2f}\nwrote {out_dir}/talking.mp4, frames.png, metrics.json "
        f"in {metrics['seconds']:.0f}s"
    )
    return 0
