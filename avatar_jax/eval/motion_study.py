"""``avatar-jax motion-study``: the audio-driven model's motion against the rig teacher, in 3D, on CPU.

The model-side measurement of issue 12 (it was ``avatar-jax demo`` before the demo became the whole
photo -> talking video pipeline, :mod:`avatar_jax.demo`). No renderer in the loss: the model learns the
teacher's posed Gaussian centres directly, which isolates the motion model from appearance.

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
   (a strip of frames) and ``metrics.json`` in ``config.motion_study.out``.
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
from avatar_jax.data import corpus, motion, rig, synthetic, visemes
from avatar_jax.eval import motion as scores
from avatar_jax.export.video import write_video
from avatar_jax.model import particles
from avatar_jax.model.avatar import forward
from avatar_jax.model.canonical import CanonicalAvatar
from avatar_jax.model.talking import TalkingAvatar
from avatar_jax.render import render
from avatar_jax.train.avatar import canonical_from_rig

SAMPLE_RATE = 16000


def add_arguments(parser):
    parser.add_argument("--out", default=None, help="output folder (default: config.motion_study.out)")


def teacher_clip(r: rig.Rig, text: str, voice: str, fps: float, seed: int, pause_s: float = 0.0) -> dict:
    """Speech and the rig's motion for it: audio (S,), controls, posed means (T,N,3) and quats, and the
    spoken phonemes' ``(start, end)`` seconds (``speech``). ``pause_s`` seconds of silence follow the
    sentence (eSpeak leaves none), so back-to-back sentences have real pauses, as people make."""
    speech = synthesize_detailed(text, voice)
    frames = int(np.ceil((speech.audio.size / SAMPLE_RATE + pause_s) * fps))
    audio = np.pad(speech.audio, (0, int(round(frames * SAMPLE_RATE / fps)) - speech.audio.size))
    controls = motion.from_speech(speech.phonemes, audio, frames, fps=fps, seed=seed)
    bones = rig.bone_transforms(r, controls)
    means, quats = rig.pose(r, bones)
    return dict(text=text, voice=voice, audio=audio.astype(np.float32), controls=controls, means=means, quats=quats,
                bones=bones, speech=visemes.speech_spans(speech.phonemes))


def long_clip(r: rig.Rig, texts: list[str], voice: str, fps: float, seed: int, seconds: float,
              pause_s: float = 0.0) -> dict:
    """Held-out sentences in one voice, each followed by ``pause_s`` of silence, until ``seconds`` of audio:
    audio, teacher motion and the spoken phonemes' ``(start, end)`` seconds on the joined clip's clock."""
    clips, total, spans = [], 0.0, []
    for k, text in enumerate(texts):
        clip = teacher_clip(r, text, voice, fps, seed + k, pause_s)
        clips.append(clip)
        spans += [(a + total, b + total) for a, b in clip["speech"]]
        total += clip["audio"].size / SAMPLE_RATE
        if total >= seconds:
            break
    return dict(audio=np.concatenate([c["audio"] for c in clips]),
                means=np.concatenate([np.asarray(c["means"]) for c in clips]), sentences=len(clips), speech=spans)


def sorted_targets(clip: dict, order: np.ndarray) -> jax.Array:
    return jnp.asarray(clip["means"])[:, order]


def lip_sets(r: rig.Rig) -> tuple[np.ndarray, np.ndarray]:
    """Figure indices of the upper- and lower-lip Gaussians within the mouth's width and 3 cm of its line."""
    m = r.figure.means
    near = (np.abs(m[:, 0] - r.mouth[0]) < r.mouth_half_width) & (np.abs(m[:, 1] - r.mouth[1]) < 0.03)
    upper = np.where(near & (r.region == rig.REGION_UPPER_LIP))[0]
    lower = np.where(near & (r.region == rig.REGION_LOWER_LIP))[0]
    if upper.size == 0 or lower.size == 0:
        raise RuntimeError("the rig has no lip Gaussians to measure the mouth opening")
    return upper, lower


# Scored regions (issue 12): name -> rig region ids
SCORED_REGIONS = {"mouth": [rig.REGION_UPPER_LIP, rig.REGION_LOWER_LIP], "eyes": [rig.REGION_EYELIDS],
                  "head": [rig.REGION_FACE], "hands": [rig.REGION_HANDS], "body": [rig.REGION_BODY],
                  "face": [rig.REGION_UPPER_LIP, rig.REGION_LOWER_LIP, rig.REGION_EYELIDS, rig.REGION_FACE]}

# The face's expression regions, scored in the head's frame
EXPRESSION_REGIONS = {"mouth": SCORED_REGIONS["mouth"], "eyes": SCORED_REGIONS["eyes"],
                      "expression": SCORED_REGIONS["mouth"] + SCORED_REGIONS["eyes"]}


def training_clips(r: rig.Rig, c, texts: list[str]) -> list[dict]:
    """The teacher clips trained on: the first ``motion_study.train_sentences`` of ``texts``, each spoken in
    ``motion_study.voices_per_sentence`` of the training voices (all but the last of ``motion_study.voices``,
    taken in turn from sentence k's own), each followed by ``sentence_pause_s`` of silence."""
    d = c.motion_study
    train_voices = list(d.voices)[:-1]
    if not 1 <= d.voices_per_sentence <= len(train_voices):
        raise ValueError(f"motion_study.voices_per_sentence must be in [1, {len(train_voices)}] (the training "
                         f"voices), got {d.voices_per_sentence}")
    return [teacher_clip(r, texts[k], train_voices[(k + j) % len(train_voices)], c.audio.fps, c.seed + k,
                         float(d.sentence_pause_s))
            for k in range(d.train_sentences) for j in range(d.voices_per_sentence)]


def joint_rotations(model: TalkingAvatar, driving: jax.Array, carry) -> jax.Array:
    """The body motion head's joint rotations ``(T, J, 3)`` for driving tokens ``(T, d)`` after ``carry`` (the same
    causal token windows :class:`avatar_jax.model.avatar.AudioDrivenAvatar` builds)."""
    w = model.motion.window
    history = jnp.concatenate([carry.window.astype(driving.dtype), driving], axis=0)
    valid = jnp.concatenate([carry.valid, jnp.ones((driving.shape[0],), bool)])
    idx = jnp.arange(driving.shape[0])[:, None] + jnp.arange(w)[None, :]
    return model.motion.body_motion(history[idx], valid[idx])


def optimizer(d, steps: int) -> optax.GradientTransformation:
    """The motion study's optimiser from ``motion_study`` settings ``d``: gradient clipping, AdamW with
    ``d.weight_decay`` and the ``d.lr_schedule`` learning rate over ``steps`` steps."""
    if d.lr_schedule == "cosine":  # warm up, then decay to 5 % (late steps refine instead of jumping around)
        lr = optax.warmup_cosine_decay_schedule(0.0, d.learning_rate, min(d.warmup_steps, steps // 4), max(steps, 1),
                                                end_value=0.05 * d.learning_rate)
    elif d.lr_schedule == "constant":
        lr = d.learning_rate
    else:
        raise ValueError(f"motion_study.lr_schedule must be 'constant' or 'cosine', got {d.lr_schedule!r}")
    if d.weight_decay < 0:
        raise ValueError(f"motion_study.weight_decay must be >= 0, got {d.weight_decay}")
    # decoupled weight decay: the three paths that can move the head (particles, residual offsets, joints)
    # stay small unless the audio keeps asking for them (README issue 12, fourth round: the held-out head went
    # from worse than standing still to the constant pose's error, the torso from 1.2 to 0.4 mm)
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(lr, weight_decay=float(d.weight_decay)))


def train_motion(c, r: rig.Rig, train: list[dict], steps: int, console: Console | None = None
                 ) -> tuple[TalkingAvatar, CanonicalAvatar, list[float]]:
    """Train a :class:`TalkingAvatar` (``c.model``, ``c.motion_study``'s loss and optimiser settings) for
    ``steps`` Adam steps on windows of the teacher clips ``train`` (:func:`teacher_clip`), each window
    starting from the teacher's pose; returns the model, the canonical avatar (Gaussians sorted by part)
    and the loss per step (metres). ``steps=0`` returns the untrained model."""
    d = c.motion_study
    fig = r.figure
    counts = {k: int(v) for k, v in c.model.particle_counts.items()}
    with c.unlocked():
        c.model.num_particles = sum(counts.values())
    avatar, particle_gaussian = canonical_from_rig(r, counts, c.model.bind_k)
    order = np.argsort(np.asarray(fig.part), kind="stable")  # sorted_by_part() uses the same order
    model = TalkingAvatar(c, nnx.Rngs(c.seed))
    graphdef, params = nnx.split(model, nnx.Param)
    opt = optimizer(d, steps)
    opt_state = opt.init(params)
    # Each scored region weighs the same in the loss: the lips are a few % of the Gaussians. The face
    # regions (lips, eyelids, face) are then weighted by face_weight.
    region_sorted = r.region[order]
    counts_per = np.bincount(region_sorted, minlength=len(particles.REGIONS)).astype(np.float64)
    loss_w = 1.0 / counts_per[region_sorted] if d.region_balanced_loss else np.ones(len(order))
    face_ids = [rig.REGION_FACE, rig.REGION_UPPER_LIP, rig.REGION_LOWER_LIP, rig.REGION_EYELIDS]
    loss_w = loss_w * np.where(np.isin(region_sorted, face_ids), float(d.face_weight), 1.0)
    loss_w = jnp.asarray(loss_w / loss_w.mean(), jnp.float32)
    body_template = bool(c.model.use_body_skinning)
    inv = np.argsort(order)  # canonical (sorted) index of each figure Gaussian
    upper, lower = lip_sets(r)
    upper_s, lower_s = jnp.asarray(inv[upper]), jnp.asarray(inv[lower])

    def gap(means):  # (T, N, 3) sorted -> (T,) lip opening (the scored lip gap, up to its rest offset)
        return means[:, upper_s, 1].mean(1) - means[:, lower_s, 1].mean(1)

    def loss_fn(p, audio, target, carry0):
        m = nnx.merge(graphdef, p)
        # as TalkingAvatar.__call__, with the clip's audio around the window (see the windows below)
        driving = m.driving(audio, target.shape[0], frame_offset=carry0.frame, context_frames=context)
        out, _ = m.motion(avatar, driving, carry0)
        loss = jnp.mean(jnp.abs(out.means - target).sum(-1) * loss_w) / 3.0
        if d.lip_gap_weight > 0:  # the mouth opening itself, which an L1 spread over Gaussians weighs little
            loss = loss + d.lip_gap_weight * jnp.mean(jnp.abs(gap(out.means) - gap(target)))
        if d.joint_prior_weight > 0 and m.motion.body_motion is not None:
            # L1 prior (metres per radian) on the template's joint rotations: a joint moves only where the
            # audio consistently asks for it (the teacher's root never moves; noise fitted on 12 sentences
            # moved the torso 1 mm on unseen speech)
            loss = loss + d.joint_prior_weight * jnp.mean(jnp.abs(joint_rotations(m, driving, carry0)))
        return loss

    @jax.jit
    def step(p, s, audio, target, carry0):
        loss, grads = jax.value_and_grad(loss_fn)(p, audio, target, carry0)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    # Windows of equal length at every offset of every clip; each starts from the teacher's pose
    # before its first frame (particle state) and passes its absolute frame index (position encoding).
    # The audio encoder sees each window with motion_study.audio_context_s of the clip's audio either side
    # (silence beyond the clip's ends), as it sees the whole clip at inference: the head follows the loudness
    # envelope smoothed over 0.3-0.6 s (centred), which a 1 s window alone does not show, and a window encoded
    # alone differed from the same frames encoded in the clip (log-mel floor, attention context).
    window = d.window_frames
    samples_per_frame = SAMPLE_RATE / c.audio.fps
    if d.audio_context_s < 0:
        raise ValueError(f"motion_study.audio_context_s must be >= 0, got {d.audio_context_s}")
    context = int(round(d.audio_context_s * c.audio.fps))
    windows = []
    for clip in train:
        target = sorted_targets(clip, order)
        state = (rig.particle_state(r, clip["bones"], particle_gaussian, np.asarray(avatar.particle_rest),
                                    body_template) if d.start_from_teacher else None)
        pad = int(round(context * samples_per_frame))
        padded = np.pad(clip["audio"], (pad, pad))
        for s0 in range(0, max(target.shape[0] - window, 0) + 1, max(window // 5, 1)):
            a0, a1 = int(round(s0 * samples_per_frame)), int(round((s0 + window) * samples_per_frame))
            if a1 <= clip["audio"].size:
                init = state[s0 - 1] if (state is not None and s0 > 0) else None
                windows.append((jnp.asarray(padded[a0:a1 + 2 * pad]), target[s0:s0 + window], init, s0))
    rng = np.random.default_rng(c.seed)
    losses = []
    console = console or Console(quiet=True)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("training", total=steps)
        for _ in range(steps):
            audio, target, init, s0 = windows[int(rng.integers(len(windows)))]
            carry0 = model.motion.init_carry(avatar, transforms=init, frame=s0)
            params, opt_state, loss = step(params, opt_state, audio, target, carry0)
            losses.append(float(loss))
            progress.update(task, advance=1, description=f"training  L1 {np.mean(losses[-10:]) * 1000:.2f} mm")
            if len(losses) % 100 == 0:  # a log line that survives in a captured run
                console.print(f"step {len(losses)}: loss {np.mean(losses[-100:]) * 1000:.2f} mm (last 100 steps)")
    if losses and not np.isfinite(losses[-1]):
        raise RuntimeError(f"training diverged (loss {losses[-1]}); lower motion_study.learning_rate")
    return nnx.merge(graphdef, params), avatar, losses


def run(args, config) -> int:
    console = Console()
    c, d = config, config.motion_study
    out_dir = args.out or d.out
    os.makedirs(out_dir, exist_ok=True)
    start = time.perf_counter()

    # 1-2. Speech and teacher motion.
    r = rig.build_rig(synthetic.figure_from_avatar("synthetic", d.num_gaussians, seed=c.seed), seed=c.seed)
    fig = r.figure  # the avatar plus the rig's mouth interior, lips, pupils and lids
    texts = [s for _, s in corpus.sentences(d.train_sentences + 1 + d.held_out_sentences, offset=c.seed)]
    # For the long held-out run: sentences neither trained on nor the single held-out one (the corpus has
    # 32, and corpus.sentences cycles, so later indices repeat earlier sentences).
    seen = set(texts[:d.train_sentences + 1])
    texts_held = list(dict.fromkeys(t for t in texts[d.train_sentences + 1:] if t not in seen))
    voices = list(d.voices)
    pause = float(d.sentence_pause_s)
    train = training_clips(r, c, texts)
    held_out = teacher_clip(r, texts[d.train_sentences], voices[-1], c.audio.fps, c.seed + 99, pause)
    console.print(f"[bold]motion study[/bold]: {d.train_sentences} training sentences in {len(train)} clips, held-out: "
                  f"[italic]{held_out['text']}[/] ({held_out['voice']}), {fig.means.shape[0]} Gaussians")

    # 3. The audio-driven avatar learns the teacher's motion from the audio alone.
    model, avatar, losses = train_motion(c, r, train, d.train_steps, console)
    order = np.argsort(np.asarray(fig.part), kind="stable")  # sorted_by_part() uses the same order
    inv = np.argsort(order)  # canonical (sorted) index of each figure Gaussian
    upper, lower = lip_sets(r)

    # 4. Held-out evaluation: held-out sentences in the held-out voice, back to back (>= motion_study.long_seconds).
    rest_fig = fig.means.astype(np.float64)

    def predict(audio: np.ndarray, frames: int) -> tuple[np.ndarray, object]:
        """Encode all the audio once, then the motion in chunks with the carry (as the bundle streams)."""
        driving = jax.jit(lambda a: model.driving(a, frames))(jnp.asarray(audio))
        gd, st = nnx.split(model.motion)
        out = stream_motion(gd, st, driving, d.eval_chunk)
        return np.asarray(out.means)[:, inv], out

    def stream_motion(gd, st, driving, chunk):
        run_chunk = jax.jit(lambda s_, dr, ca: forward(gd, s_, avatar, dr, ca))
        carry, outs = None, []
        for s_ in range(0, driving.shape[0], chunk):
            out, carry = run_chunk(st, driving[s_:s_ + chunk], carry)
            outs.append(out)
        return jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=0), *outs)

    long = long_clip(r, texts_held, voices[-1], c.audio.fps, c.seed + 200, d.long_seconds, pause)
    frames_long = long["means"].shape[0]
    pred_long, _ = predict(long["audio"], frames_long)
    teacher_long = long["means"]
    constant = np.median(np.concatenate([np.asarray(cl["means"]) for cl in train]), axis=0)  # audio-blind pose
    regions = scores.region_errors(pred_long, teacher_long, constant, rest_fig, r.region, SCORED_REGIONS)
    # The same scores in the head's own frame (rigid fit on head Gaussians only the neck moves): the jaw, lips
    # and lids apart from the head's gestures (nods and turns), which dominate the face region in the world.
    head_only = np.where((r.region == rig.REGION_FACE) & (r.weights[:, rig.HEAD] > 0.999))[0]
    local = [scores.in_head_frame(x, rest_fig, head_only) for x in (pred_long, teacher_long, constant[None])]
    regions_head = scores.region_errors(local[0], local[1], local[2][0], rest_fig, r.region, EXPRESSION_REGIONS)
    gap_model = scores.lip_gap(pred_long, rest_fig, upper, lower)
    gap_teacher = scores.lip_gap(teacher_long, rest_fig, upper, lower)
    # Silence = real pauses (>= 0.2 s without a phoneme, 0.1 s margins), from the TTS timing: a low-RMS
    # rule also counts stop closures inside words, where the teacher's jaw is a quarter open.
    silent = scores.pause_frames(long["speech"], frames_long, c.audio.fps)
    lips = scores.lip_scores(gap_model, gap_teacher, silent)
    ten_s = int(round(10 * c.audio.fps))
    drift = scores.drift(pred_long, rest_fig, ten_s)
    teacher_drift = scores.drift(teacher_long, rest_fig, ten_s)
    # per region: which part's displacement changes between the first and last 10 s
    # and the teacher's own, beside it: growth the teacher shows too is content (e.g. more open vowels late)
    drift_regions, teacher_drift_regions = {}, {}
    for name, ids in SCORED_REGIONS.items():
        sel = np.isin(r.region, ids)
        if sel.any():
            drift_regions[name] = scores.drift(pred_long[:, sel], rest_fig[sel], ten_s)
            teacher_drift_regions[name] = scores.drift(teacher_long[:, sel], rest_fig[sel], ten_s)

    console.print(f"held-out speech, {frames_long / c.audio.fps:.0f} s ({long['sentences']} sentences, "
                  f"{voices[-1]}): per region error vs teacher (mm) and motion explained")
    for name, v in regions.items():
        console.print(f"  {name:6s} model {v['model_mm']:6.2f}  constant pose {v['constant_mm']:6.2f}  "
                      f"rest {v['rest_mm']:6.2f}  explained {v['explained']:+.2f} vs constant "
                      f"{v['constant_explained']:+.2f}")
    console.print("  in the head's frame (expression without the head's nods and turns): " + ", ".join(
        f"{k} model {v['model_mm']:.2f} constant {v['constant_mm']:.2f} rest {v['rest_mm']:.2f} mm, explained "
        f"{v['explained']:+.2f} vs {v['constant_explained']:+.2f}" for k, v in regions_head.items()))
    console.print(f"  lip gap: amplitude {lips['amplitude_ratio']:.2f} of the teacher's, correlation "
                  f"{lips['correlation']:.2f}; mouth closed in {lips['closed_in_silence'] * 100:.0f} % of "
                  f"{lips['silent_frames']} silent frames (teacher {lips['teacher_closed_in_silence'] * 100:.0f} %)")
    console.print(f"  drift: mean displacement {drift['first_mm']:.2f} mm (first 10 s) -> {drift['last_mm']:.2f} mm "
                  f"(last 10 s), ratio {drift['ratio']:.2f} (teacher {teacher_drift['ratio']:.2f}); "
                  f"max {drift['max_mm']:.1f} mm")
    console.print("  drift per region, first -> last 10 s (mm), model (teacher in brackets): " + ", ".join(
        f"{k} {v['first_mm']:.2f} -> {v['last_mm']:.2f} [{teacher_drift_regions[k]['first_mm']:.2f} -> "
        f"{teacher_drift_regions[k]['last_mm']:.2f}]" for k, v in drift_regions.items()))
    frames = held_out["means"].shape[0]
    pred, predicted = predict(held_out["audio"], frames)
    target = np.asarray(held_out["means"])
    err_model = float(np.abs(pred - target).mean())
    err_still = float(np.abs(rest_fig[None] - target).mean())
    sync = float(np.corrcoef(scores.lip_gap(target, rest_fig, upper, lower),
                             scores.lip_gap(pred, rest_fig, upper, lower))[0, 1])

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
        long_held_out=dict(seconds=frames_long / c.audio.fps, sentences=long["sentences"], regions=regions,
                           regions_head_frame=regions_head,
                           lips=lips, drift=drift, teacher_drift=teacher_drift, drift_regions=drift_regions,
                           teacher_drift_regions=teacher_drift_regions),
    )
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    console.print(
        f"trained {d.train_steps} steps: L1 {losses[0] * 1000:.2f} -> {metrics['final_train_l1_m'] * 1000:.2f} mm; "
        f"held-out L1 {err_model * 1000:.2f} mm vs {err_still * 1000:.2f} mm standing still; "
        f"mouth-opening correlation {sync:.2f}"
    )
    console.print(f"wrote {out_dir}/talking.mp4, frames.png, metrics.json in {metrics['seconds']:.0f}s")
    return 0
