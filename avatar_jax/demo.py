"""The demo as a library: one photo -> a full-body Gaussian avatar that talks from audio it never heard.

    photo ─► reconstruct ─► prepare (TTS + rig: talking clips of that avatar) ─► train (through the
    renderer) ─► score (held-out PSNR, mouth correlation; trained vs untrained) ─► export ─► render

Every stage is a call into the library of that stage (no CLI subprocesses); MediaPipe runs in its own
venv as :mod:`avatar_jax.personalize.detect` always does. The output folder (``DemoPaths``) holds each
stage's outputs and ``demo.json``: the run's fingerprint (config + photo) and the stages finished, with
their seconds. A rerun with the same ``out`` reuses finished stages; an ``out`` that holds anything
else (another config or photo, or a folder that is not a demo) is refused unless ``overwrite``.

The held-out clips are ``demo.held_out_sentences`` sentences the training clips never say, spoken by a
voice they never use, drawn by the same rig at the training size. They are scored whole, trained vs
untrained model, the way training scores its held-out split (``train/evaluate.py`` with the training
run's lip binding and render settings). The first of them is also drawn at ``demo.video_size`` and shown
in ``demo.mp4``: photo | teacher | model (front) | model (novel view), with its audio.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable

import numpy as np

from avatar_jax.errors import InputError

STAGES = ("reconstruct", "prepare", "train", "score", "export", "render")
MANIFEST = "demo.json"
PANELS = ("photo", "teacher (held out)", "model, front", "model, novel view")


@dataclasses.dataclass(frozen=True)
class DemoPaths:
    """Where everything goes, under one folder."""

    out: str

    def __getattr__(self, name: str) -> str:
        files = dict(manifest=MANIFEST, photo="photo.png", avatar="avatar", data="data", held_out="held_out",
                     teacher="held_out_video",
                     run="run", bundle="bundle", video="demo.mp4", strip="frames.png", metrics="metrics.json")
        if name not in files:
            raise AttributeError(name)
        return os.path.join(self.out, files[name])


def default_photo() -> np.ndarray:
    """``skimage.data.astronaut()``: (512,512,3) uint8, public domain, shipped inside scikit-image."""
    from skimage import data

    return np.asarray(data.astronaut())


def load_photo(path: str | None) -> np.ndarray:
    """``path`` (any image :func:`~avatar_jax.personalize.photo_input.load_image` reads) or the default."""
    if not path:
        return default_photo()
    from avatar_jax.personalize.photo_input import load_image

    return load_image(path)


def stage_config(config):
    """The config every stage runs with: ``config`` with the ``demo.*`` sizes put in their stages' keys."""
    c = config.copy_and_resolve_references()
    d = c.demo
    if int(d.size) < 16 or int(d.video_size) < 16 or int(d.size) % 2 or int(d.video_size) % 2:
        raise InputError(f"demo.size and demo.video_size must be even and >= 16, got {d.size} and {d.video_size}")
    if d.held_out_voice in tuple(d.voices):
        raise InputError(f"demo.held_out_voice {d.held_out_voice!r} is also a training voice; it must be unheard")
    if int(d.held_out_sentences) < 1:
        raise InputError(f"demo.held_out_sentences must be >= 1, got {d.held_out_sentences}")
    if int(d.sentences) < 1 or not tuple(d.voices):
        raise InputError("the demo needs demo.sentences >= 1 and at least one training voice (demo.voices)")
    if int(d.held_out_offset) < int(d.sentences):
        raise InputError(f"demo.held_out_offset={d.held_out_offset} must be >= demo.sentences={d.sentences}: the "
                         "held-out sentences would be training sentences")
    with c.unlocked():
        r = c.reconstruct
        r.num_gaussians, r.body_steps, r.photo_steps = int(d.num_gaussians), int(d.body_steps), int(d.photo_steps)
        r.work_size, r.crop_size = int(d.work_size), int(d.crop_size)
        s = c.data.synthetic
        s.size, s.framing, s.voices, s.sentences, s.subjects = int(d.size), str(d.framing), tuple(d.voices), int(
            d.sentences), 1
        c.data.held_out = 0.0  # every prepared clip trains; held-out clips are made apart (unseen voice + text)
        if int(d.train_steps) > 0:
            c.train.steps = int(d.train_steps)
        if int(d.batch_size) > 0:
            c.train.batch_size = int(d.batch_size)
        c.train.eval_clips = 0  # the demo scores its own held-out clips (score stage)
        c.train.image_every = 0
        c.train.avatar = ""
    return c


def fingerprint(config, photo: np.ndarray) -> dict:
    """What makes two runs the same: the config (less ``demo.out``) and the photo's pixels."""
    plain = json.loads(config.to_json_best_effort())
    plain["demo"].pop("out", None)
    text = json.dumps(plain, sort_keys=True)
    return dict(config_sha=hashlib.sha256(text.encode()).hexdigest()[:16],
                photo_sha=hashlib.sha256(np.ascontiguousarray(photo).tobytes()).hexdigest()[:16],
                photo_shape=list(photo.shape))


class Manifest:
    """``demo.json``: the fingerprint and, per finished stage, its seconds and notes. Written atomically."""

    def __init__(self, path: str, fp: dict, stages: dict | None = None):
        self.path, self.fp, self.stages = path, fp, dict(stages or {})

    def done(self, stage: str) -> bool:
        return stage in self.stages

    def finish(self, stage: str, seconds: float, **notes) -> None:
        self.stages[stage] = dict(seconds=round(float(seconds), 2), **notes)
        self.save()

    def save(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(dict(fingerprint=self.fp, stages=self.stages), f, indent=1)
        os.replace(tmp, self.path)


def open_out(out: str, fp: dict, overwrite: bool) -> Manifest:
    """Check ``out`` before any work: new or empty -> fresh; the same run -> resume; else refuse (or wipe)."""
    out = os.path.abspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise InputError(f"--out {out} is a file; give a folder for the demo's outputs")
    path = os.path.join(out, MANIFEST)
    if os.path.isdir(out) and os.listdir(out):
        same = False
        if os.path.exists(path):
            try:
                with open(path) as f:
                    prev = json.load(f)
                same = prev.get("fingerprint") == fp
            except (OSError, ValueError):
                prev = {}
        if same:
            return Manifest(path, fp, prev.get("stages"))
        if not overwrite:
            what = ("a demo of another config or photo" if os.path.exists(path) else
                    "files that are not a demo run")
            raise InputError(f"--out {out} holds {what}; pass --overwrite to replace it, or choose another --out")
        shutil.rmtree(out)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create --out {out}: {e.strerror}") from None
    if not os.access(out, os.W_OK):
        raise InputError(f"--out {out} is not writable")
    manifest = Manifest(path, fp)
    manifest.save()
    return manifest


# ----------------------------------------------------------------------------------------------- stages


def run_reconstruct(c, photo: np.ndarray, paths: DemoPaths, say) -> dict:
    import imageio.v3 as iio

    from avatar_jax.personalize import output_dir
    from avatar_jax.personalize.reconstruct import reconstruct, write_outputs

    iio.imwrite(paths.photo, photo)
    staging = output_dir.prepare(paths.avatar, overwrite=True)
    try:
        outputs, report = reconstruct(photo, c, say)
        write_outputs(staging, outputs, report)
        output_dir.commit(staging, paths.avatar)
    finally:
        output_dir.discard(staging)
    for w in report["warnings"]:
        say(f"[yellow]reconstruct warning: {w}[/yellow]")
    return dict(psnr_in_mask_db=round(report["psnr_in_mask_db"], 2), num_gaussians=report["num_gaussians"],
                warnings=report["warnings"])


def held_out_sentences(c) -> list[tuple[str, str]]:
    """``(category, text)`` of the ``demo.held_out_sentences`` corpus sentences from ``demo.held_out_offset`` on
    (``prepare_synthetic`` says sentences 0..n-1; :func:`stage_config` keeps the two apart)."""
    from avatar_jax.data import corpus

    return corpus.sentences(int(c.demo.held_out_sentences), offset=int(c.demo.held_out_offset))


def subject_of(paths: DemoPaths) -> str:
    return f"{os.path.basename(os.path.normpath(paths.avatar))}_0"  # prepare_synthetic's name for subject 0


def run_prepare(c, paths: DemoPaths, progress: bool) -> dict:
    """Training clips (``prepare_synthetic``); the held-out clips (unseen sentences, unseen voice) at the
    training size, for scoring; the first held-out sentence again at ``demo.video_size`` (same seed: the
    same speech and motion), the video's teacher. All by the very rig the training clips come from."""
    from avatar_jax.data import index, rig, synthetic

    opts = synthetic.SyntheticOptions.from_config(c.data)
    report = synthetic.prepare_synthetic(paths.avatar, paths.data, opts, held_out=0.0, seed=int(c.seed),
                                         progress=progress)
    built = rig.build_rig(synthetic.figure_from_avatar(paths.avatar, opts.num_gaussians, seed=int(c.seed)), seed=0)
    saved, _, _ = synthetic.load_rig_avatar(synthetic.avatar_path(paths.data, subject_of(paths)))
    if not np.allclose(saved.means, built.figure.means, atol=1e-6):  # the teacher must show the trained figure
        raise RuntimeError("the held-out rig differs from the training clips' rig (nondeterministic rig build)")
    voice, subject = str(c.demo.held_out_voice), subject_of(paths)

    def draw(text: str, size: int, seed: int):
        cam = synthetic.frame_camera(built, size, opts.framing, opts.fov_y_deg)
        return synthetic.make_clip(built, text, voice, size=size, framing=opts.framing, fps=opts.fps, seed=seed,
                                   fov_y_deg=opts.fov_y_deg, capacity=synthetic.render_capacity(built, cam))

    sentences, frames = held_out_sentences(c), []
    for k, (category, text) in enumerate(sentences):
        clip = draw(text, int(opts.size), int(c.seed) + 99991 + k)
        synthetic.write_synthetic_clip(paths.held_out, f"{subject}_held_out_{k:03d}", subject, clip,
                                       {"category": category, "avatar": paths.avatar})
        frames.append(int(clip.controls.num_frames))
    index.build_index(paths.held_out, held_out=0.0)
    clip = draw(sentences[0][1], int(c.demo.video_size), int(c.seed) + 99991)
    synthetic.write_synthetic_clip(paths.teacher, f"{subject}_held_out_video", subject, clip,
                                   {"category": sentences[0][0], "avatar": paths.avatar})
    index.build_index(paths.teacher, held_out=0.0)
    return dict(train_clips=report["clips"], held_out_texts=[t for _, t in sentences], held_out_voice=voice,
                held_out_frames=frames, video_frames=int(clip.controls.num_frames))


def run_train(c, paths: DemoPaths, progress: bool) -> dict:
    from avatar_jax.train.loop import train

    summary = train(c, paths.run, data_root=paths.data, progress=progress)
    if summary["stopped"] != "done":
        raise RuntimeError(f"training stopped early ({summary['stopped']}); rerun the demo to resume it")
    return dict(steps=summary["step"], first_loss=summary["first_loss"], final_loss=summary["final_loss"],
                bad_steps=summary["bad_steps"], train_seconds=round(summary["seconds"], 1))


def video_clip(paths: DemoPaths) -> dict:
    """The video's held-out clip: ``frame (T,H,W,3) uint8``, ``mask``, ``audio (S,)``, ``face``... and meta."""
    from avatar_jax.data import index, records

    entry = index.load_index(paths.teacher)["clips"][0]
    reader = records.ClipReader(paths.teacher, entry["clip_id"])
    clip = reader.window(0, len(reader))
    reader.close()
    clip["meta"] = reader.meta
    return clip


def run_score(c, paths: DemoPaths) -> dict:
    """Held-out PSNR inside the person mask and mouth-opening correlation over all held-out clips, whole,
    trained vs untrained weights (the seed's initialisation, what training started from), scored exactly
    as training scores its held-out split: :func:`avatar_jax.train.evaluate.evaluate` at the training size
    with the run's constants (lip landmarks bound within their lips by the rig's regions), render capacity
    and backdrop."""
    from flax import nnx

    from avatar_jax.train import data, evaluate, step
    from avatar_jax.train import state as state_lib
    from avatar_jax.train.restore import restore_run

    run = restore_run(paths.run, data_root=paths.data)
    config, source, trained = run.config, run.source, run.trained
    # As train/loop.py: constants with the rig's regions; render settings from the first training window.
    consts = step.make_constants(config, trained.avatar, trained.landmarks, trained.region)
    first = data.from_numpy({k: v[None] for k, v in source[0].items()})
    rs = step.render_settings(config, trained.avatar, first, source.width, source.height)
    untrained = nnx.split(state_lib.initial_model(config), nnx.Param)[1]
    clips = int(c.demo.held_out_sentences)
    scores = {}
    for name, params in (("untrained", untrained), ("trained", run.params)):
        s = evaluate.evaluate(run.graphdef, params, consts, rs, paths.held_out, clips=clips, split="all",
                              landmark_rest=trained.landmarks, region=trained.region)
        if s.get("clips") != clips:
            raise RuntimeError(f"scored {s.get('clips')} held-out clips, expected {clips}; rerun with --overwrite")
        scores[name] = dict(psnr_mask_db=s["psnr_mask"], mouth_corr=s["mouth_corr"])
    return dict(step=run.step, clips=clips, size=f"{source.width}x{source.height}", **scores)


def run_export(paths: DemoPaths, size: int) -> dict:
    from avatar_jax.export.from_workdir import export_workdir

    _, step = export_workdir(paths.run, paths.bundle, data_root=paths.data, resolutions=[(size, size)],
                             platforms=["cpu"])
    return dict(step=step, resolution=f"{size}x{size}", platforms=["cpu"])


def fit_panel(image: np.ndarray, size: int, background=(255, 255, 255)) -> np.ndarray:
    """``image (H,W,3) uint8`` scaled to fit a ``size x size`` panel (aspect kept, letterboxed)."""
    from PIL import Image

    h, w = image.shape[:2]
    s = size / max(h, w)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    small = np.asarray(Image.fromarray(image).resize((nw, nh), Image.LANCZOS))
    panel = np.empty((size, size, 3), np.uint8)
    panel[:] = background
    y0, x0 = (size - nh) // 2, (size - nw) // 2
    panel[y0:y0 + nh, x0:x0 + nw] = small
    return panel


def label_row(width_per_panel: int, labels=PANELS) -> np.ndarray:
    """A white strip with each panel's name, ``(h, len(labels)*width_per_panel, 3) uint8``."""
    from PIL import Image, ImageDraw, ImageFont

    height = 16 if width_per_panel < 160 else 22
    img = Image.new("RGB", (width_per_panel * len(labels), height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    try:
        font = ImageFont.load_default(size=height - 6)
    except TypeError:  # Pillow < 10.1 has one fixed-size default font
        font = ImageFont.load_default()
    for k, text in enumerate(labels):
        while len(text) > 3 and draw.textlength(text, font=font) > width_per_panel - 4:
            text = text[:-2] + "…"
        draw.text((k * width_per_panel + 2, 2), text, fill=(0, 0, 0), font=font)
    return np.asarray(img)


def compose(photo_panel: np.ndarray, teacher: np.ndarray, front: np.ndarray, novel: np.ndarray) -> np.ndarray:
    """Side by side, each ``(T,S,S,3)`` uint8 (the photo ``(S,S,3)``) -> ``(T, S+label, 4S, 3)`` uint8."""
    t, s = teacher.shape[0], teacher.shape[1]
    frames = np.concatenate([np.broadcast_to(photo_panel, teacher.shape), teacher, front, novel], axis=2)
    label = label_row(s)
    return np.concatenate([np.broadcast_to(label, (t, *label.shape)), frames], axis=1)


def frame_strip(video: np.ndarray, count: int = 4) -> np.ndarray:
    """``count`` frames of ``video (T,H,W,3)`` evenly over the clip, stacked top to bottom (label row once)."""
    picks = np.linspace(0, video.shape[0] - 1, min(count, video.shape[0])).round().astype(int)
    label_h = video.shape[1] - video.shape[2] // len(PANELS)
    rows = [video[picks[0]]] + [video[p][label_h:] for p in picks[1:]]
    return np.concatenate(rows, axis=0)


def run_render(c, paths: DemoPaths, photo: np.ndarray, progress: bool) -> dict:
    """Front and novel views of the held-out speech from the bundle, beside the photo and the teacher."""
    import imageio.v3 as iio
    from rich.progress import Progress

    from avatar_jax.export.loader import load_bundle
    from avatar_jax.export.video import VideoStream, to_uint8
    from avatar_jax.inference.cameras import camera_path
    from avatar_jax.inference.stream import StreamStats, stream_frames

    size = int(c.demo.video_size)
    bundle = load_bundle(paths.bundle)
    clip = video_clip(paths)
    audio = np.asarray(clip["audio"], np.float32)
    views, stats = {}, {}
    with Progress(disable=not progress, transient=True) as bar:
        for kind in ("front", "novel"):
            path = camera_path(bundle.front, size, size, kind, azimuth_deg=float(c.demo.novel_azimuth))
            stats[kind] = StreamStats()
            task = bar.add_task(f"render {kind}", total=None)
            batches = []
            for b in stream_frames(bundle, audio, path, chunk=25, stats=stats[kind]):
                batches.append(to_uint8(b.rgb))
                bar.update(task, completed=stats[kind].frames)
            views[kind] = np.concatenate(batches)
    teacher = clip["frame"]
    n = min(teacher.shape[0], views["front"].shape[0])
    if teacher.shape[1:3] != (size, size):
        raise RuntimeError(f"held-out clip is {teacher.shape[2]}x{teacher.shape[1]}, expected {size}x{size}")
    bg = tuple(int(v) for v in np.median(teacher[0][clip["mask"][0] < 3], axis=0)) if (clip["mask"][0] < 3).any() \
        else (255, 255, 255)
    video = compose(fit_panel(photo, size, bg), teacher[:n], views["front"][:n], views["novel"][:n])
    pad = video.shape[1] % 2  # H.264 needs even sizes
    if pad:
        video = np.concatenate([video, np.full((video.shape[0], 1, *video.shape[2:]), 255, np.uint8)], axis=1)
    with VideoStream(paths.video, video.shape[2], video.shape[1], bundle.fps, audio, bundle.sample_rate) as out:
        out.send(video)
    iio.imwrite(paths.strip, frame_strip(video))
    return dict(frames=int(n), seconds_of_speech=round(audio.size / bundle.sample_rate, 2),
                frames_per_second={k: round(v.frames_per_second, 2) for k, v in stats.items()})


# ------------------------------------------------------------------------------------------- the run


@dataclasses.dataclass
class DemoResult:
    paths: DemoPaths
    metrics: dict
    stages: dict  # stage -> {"seconds", "reused", ...}


def run_demo(config, out: str | None = None, *, image: str | None = None, overwrite: bool = False,
             progress: bool = True, say: Callable[..., None] | None = None,
             stages: tuple[str, ...] = STAGES) -> DemoResult:
    """Run (or resume) the demo into ``out`` (default ``config.demo.out``); see the module doc.

    ``image``: a photo path (default ``config.demo.image``, else the astronaut). ``say`` prints a line
    (rich markup allowed). ``stages``: run only up to these (for tests and debugging; in order).
    """
    say = say or (lambda *a, **k: None)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise InputError(f"unknown demo stage(s) {', '.join(unknown)}; stages are {', '.join(STAGES)}")
    from avatar_jax.audio import pretrained

    # a configured pretrained speech encoder (audio.encoder=wav2vec2, audio.checkpoint_dir) is checked before
    # minutes of reconstruction: a missing folder or an unsupported checkpoint is one clear error now
    c = pretrained.resolve(stage_config(config))
    photo = load_photo(image if image is not None else str(c.demo.image))
    paths = DemoPaths(os.path.abspath(out or str(c.demo.out)))
    manifest = open_out(paths.out, fingerprint(c, photo), overwrite)
    say(f"[bold]avatar-jax demo[/bold] -> {paths.out} ({'resuming' if manifest.stages else 'new run'})")
    work = {
        "reconstruct": lambda: run_reconstruct(c, photo, paths, say),
        "prepare": lambda: run_prepare(c, paths, progress),
        "train": lambda: run_train(c, paths, progress),
        "score": lambda: run_score(c, paths),
        "export": lambda: run_export(paths, int(c.demo.video_size)),
        "render": lambda: run_render(c, paths, photo, progress),
    }
    report = {}
    for k, stage in enumerate(STAGES):
        if stage not in stages:
            continue
        tag = f"[{k + 1}/{len(STAGES)}] {stage}"
        if manifest.done(stage):
            report[stage] = dict(manifest.stages[stage], reused=True)
            say(f"{tag}: done earlier ({manifest.stages[stage]['seconds']:.0f} s), reused")
            continue
        say(f"{tag} ...")
        tic, cpu = time.perf_counter(), time.process_time()
        notes = work[stage]()
        # CPU seconds of this process (all threads; not MediaPipe's subprocess): on a shared machine
        # the wall time depends on the other jobs, the CPU time much less.
        manifest.finish(stage, time.perf_counter() - tic, cpu_s=round(time.process_time() - cpu, 1), **notes)
        report[stage] = dict(manifest.stages[stage], reused=False)
        say(f"{tag}: {manifest.stages[stage]['seconds']:.0f} s")
    metrics = write_metrics(c, paths, manifest)
    return DemoResult(paths, metrics, report)


def write_metrics(c, paths: DemoPaths, manifest: Manifest) -> dict:
    """``metrics.json``: held-out scores (trained vs untrained), what ran where, and each stage's seconds."""
    score = manifest.stages.get("score", {})
    prep = manifest.stages.get("prepare", {})
    frames = prep.get("held_out_frames")
    metrics = dict(
        held_out=dict(texts=prep.get("held_out_texts"), voice=prep.get("held_out_voice"),
                      clips=len(frames) if frames else None, frames=frames,
                      frames_total=sum(frames) if frames else None, size=int(c.data.synthetic.size),
                      trained=score.get("trained"), untrained=score.get("untrained")),
        video=dict(text=(prep.get("held_out_texts") or [None])[0], frames=prep.get("video_frames"),
                   size=int(c.demo.video_size)),
        beats_untrained=(dict(psnr=score["trained"]["psnr_mask_db"] > score["untrained"]["psnr_mask_db"],
                              mouth_corr=score["trained"]["mouth_corr"] > score["untrained"]["mouth_corr"])
                         if score else None),
        settings=dict(reconstruct_gaussians=int(c.reconstruct.num_gaussians), train_size=int(c.data.synthetic.size),
                      framing=str(c.data.synthetic.framing), train_voices=list(c.data.synthetic.voices),
                      train_sentences_per_voice=int(c.data.synthetic.sentences), train_steps=int(c.train.steps),
                      batch_size=int(c.train.batch_size), seq_len=int(c.train.seq_len)),
        stage_seconds={k: v["seconds"] for k, v in manifest.stages.items()},
        stage_cpu_seconds={k: v.get("cpu_s") for k, v in manifest.stages.items()},
        total_seconds=round(sum(v["seconds"] for v in manifest.stages.values()), 1),
    )
    tmp = paths.metrics + ".tmp"
    with open(tmp, "w") as f:
        json.dump(metrics, f, indent=2)
    os.replace(tmp, paths.metrics)
    return metrics
