"""A trained run as an evaluation method: restore a workdir's latest checkpoint and render clips with it.

    WORKDIR (config.json + checkpoints/) ──► TrainedRun ──► render(clip) ──► MethodOutput(frames, face)

The run's dataset (``--data`` or its config's ``data.root``) gives the held-out clips (the index's
``test`` split: unseen sentences and voices), the avatar the run trained on and the render settings the
training used (same capacity rule, background and backend). Face landmarks of a render are the rig's
478 face-mesh points bound to the avatar's Gaussians and projected with the clip camera, so the offline
sync measure reads the mouth the model actually moved. The rest-pose reference renders the canonical
avatar unmoved in every frame (what "no motion" scores).

Only public functions of the training package are used (Checkpointer, abstract_state, step.predict_jit).
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from avatar_jax.data import index, records
from avatar_jax.errors import InputError
from avatar_jax.eval.report import EvalClip, MethodOutput
from avatar_jax.geometry import Camera
from avatar_jax.model import landmarks as landmarks_lib

SPLIT_ALIASES = {"held_out": "test", "test": "test", "train": "train", "all": "all"}
FACE = slice(33, 33 + 478)  # face-mesh rows in template landmark order (pose 33, face 478, hands 42)


def load_clips(root: str, split: str = "held_out", clips: int = 0, frames: int = 0) -> list[EvalClip]:
    """The first ``clips`` clips (0: all) of ``split``, each over its first ``frames`` frames (0: whole)."""
    if split not in SPLIT_ALIASES:
        raise InputError(f"--split must be one of {', '.join(SPLIT_ALIASES)}, got {split!r}")
    entries = index.clips_in_split(index.load_index(root), SPLIT_ALIASES[split])
    entries = entries[:clips] if clips else entries
    if not entries:
        raise InputError(f"dataset {root!r} has no clips in split {split!r}")
    out = []
    for e in entries:
        reader = records.ClipReader(root, e["clip_id"])
        n = min(frames, len(reader)) if frames > 0 else len(reader)
        window = reader.window(0, n)
        reader.close()
        face = np.asarray(window["face"], np.float32) if "face" in window else None
        meta = reader.meta
        out.append(EvalClip(e["clip_id"], np.asarray(window["frame"]), np.asarray(window["mask"]),
                            np.asarray(window["audio"], np.float32), face, float(meta.fps),
                            np.asarray(meta.K, np.float32), np.asarray(meta.viewmat, np.float32)))
    return out


@dataclasses.dataclass
class TrainedRun:
    name: str
    workdir: str
    step: int
    config: ml_collections.ConfigDict
    graphdef: object
    params: object
    consts: object
    render_settings: object
    face_binding: landmarks_lib.LandmarkBinding | None
    avatar: object

    def _camera(self, clip: EvalClip) -> tuple[np.ndarray, np.ndarray]:
        if clip.K is None or clip.viewmat is None:
            raise InputError(f"clip {clip.clip_id} has no camera to render it with")
        return clip.K, clip.viewmat

    def _face(self, means: jax.Array, clip: EvalClip) -> np.ndarray | None:
        if self.face_binding is None:
            return None
        K, viewmat = self._camera(clip)
        rs = self.render_settings
        pts = landmarks_lib.landmarks(means.astype(jnp.float32), self.face_binding)  # (T, 478, 3)
        uv, _ = Camera(jnp.asarray(viewmat), jnp.asarray(K), rs.width, rs.height).project(pts.reshape(-1, 3))
        return np.asarray(uv).reshape(pts.shape[0], -1, 2)

    def render(self, clip: EvalClip) -> MethodOutput:
        """The model driven by the clip's audio alone, seen by the clip's camera."""
        from avatar_jax.train import step

        K, viewmat = self._camera(clip)
        res = step.predict_jit(self.graphdef, self.params, self.consts, jnp.asarray(clip.audio), K, viewmat,
                               len(clip.frames), self.render_settings)
        out, rgb = res[0], res[1]  # (Gaussians, rgb, alpha[, overflow])
        return MethodOutput(np.asarray(rgb, np.float32), self._face(out.means, clip))

    def render_rest(self, clip: EvalClip) -> MethodOutput:
        """The canonical avatar unmoved, every frame (the no-motion reference)."""
        from avatar_jax.render import render

        K, viewmat = self._camera(clip)
        rs = self.render_settings
        ri = self.avatar.render_inputs()
        img = render(**ri, camera=Camera(jnp.asarray(viewmat), jnp.asarray(K), rs.width, rs.height),
                     background=rs.background, backend=rs.backend, capacity=rs.capacity).rgb
        t = len(clip.frames)
        frames = np.repeat(np.asarray(img, np.float32)[None], t, axis=0)
        means = jnp.broadcast_to(ri["means"], (t, *ri["means"].shape))
        return MethodOutput(frames, self._face(means, clip))


def load_run(workdir: str, *, name: str = "", data_root: str | None = None, clip: EvalClip | None = None
             ) -> TrainedRun:
    """Restore ``workdir``'s latest checkpoint on one device with the avatar and render settings it trained with."""
    from avatar_jax.train import data, step
    from avatar_jax.train.restore import restore_run

    run = restore_run(workdir, data_root=data_root)
    config, source, trained = run.config, run.source, run.trained
    consts = step.make_constants(config, trained.avatar, trained.landmarks)
    first = data.from_numpy({k: v[None] for k, v in source[0].items()})
    rs = step.render_settings(config, trained.avatar, first, source.width, source.height)
    face_binding = None
    if trained.landmarks is not None:
        rest = np.asarray(trained.landmarks)[FACE]
        part = landmarks_lib.template_landmark_parts()[FACE]
        face_binding = landmarks_lib.build_landmark_binding(np.asarray(trained.avatar.means),
                                                            np.asarray(trained.avatar.part), rest, part)
    return TrainedRun(name or os.path.basename(os.path.normpath(workdir)), workdir, run.step, config, run.graphdef,
                      run.params, consts, rs, face_binding, trained.avatar)

