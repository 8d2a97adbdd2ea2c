"""SyncNet (Chung & Zisserman 2016, the ``syncnet_v2`` model of syncnet_python) in Flax NNX, its
checkpoint converter, and SyncC / SyncD computed as upstream's ``SyncNetInstance.evaluate``.

    audio tower: MFCC window (B, 13, 20, 1) ──► 6 conv+BN+ReLU (3 max-pools) ──► (B, 512) ──► fc ──► (B, 1024)
    lip tower:   5 face crops (B, 5, 224, 224, 3) BGR 0..255 ──► 6 conv3d+BN+ReLU ──► (B, 512) ──► fc ──► (B, 1024)

Sync scores (upstream, ``vshift = 15``): for every start frame v of the clip, the lip embedding of
frames v..v+4 and the audio embedding of MFCC frames 4v..4v+19 (0.2 s, 100 MFCC frames a second at
25 fps). For each offset in -15..15 the mean over v of the distance between lip feature v and audio
feature v+offset (zero-padded), ``mdist (31,)``. SyncD is ``min(mdist)``, SyncC (confidence) is
``median(mdist) - min(mdist)``, the AV offset is ``15 - argmin``.

Channel widths are read from the checkpoint, so a narrower network in the same layout loads too (the
parity test uses one). Upstream keys: ``netcnnaud.{0,4,8,11,14,18}`` convs and ``.{1,5,...}`` batch
norms, ``netfcaud.{0,1,3}``, and the same indices under ``netcnnlip`` / ``netfclip``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from avatar_jax.errors import InputError
from avatar_jax.eval import mfcc as mfcc_lib
from avatar_jax.eval.torch_legacy import load_state_dict
from avatar_jax.eval.weights import assert_filled, build_abstract, require_file, set_batch_norm, set_conv, set_linear

CONV_IDX = (0, 4, 8, 11, 14, 18)  # conv positions in both nn.Sequential towers (batch norm at +1)
VSHIFT = 15
FETCH_ADVICE = (
    "provide the public SyncNet checkpoint syncnet_v2.model (from syncnet_python's download_model.sh, "
    "data/syncnet_v2.model) as a local file; nothing is downloaded at run time"
)


@dataclasses.dataclass(frozen=True)
class SyncNetSpec:
    """Widths of the six convs of each tower and of the two fc layers; defaults are syncnet_v2."""

    audio_channels: tuple[int, ...] = (64, 192, 384, 256, 256, 512)
    lip_channels: tuple[int, ...] = (96, 256, 256, 256, 256, 512)
    fc_hidden: int = 512
    embed_dim: int = 1024


# (kernel, stride, padding) of each conv; a max-pool after convs 1, 2 and 5 (audio: 2, 5).
_AUD_CONV = [((3, 3), (1, 1), (1, 1))] * 5 + [((5, 4), (1, 1), (0, 0))]
_LIP_CONV = [
    ((5, 7, 7), (1, 2, 2), (0, 0, 0)),
    ((1, 5, 5), (1, 2, 2), (0, 1, 1)),
    ((1, 3, 3), (1, 1, 1), (0, 1, 1)),
    ((1, 3, 3), (1, 1, 1), (0, 1, 1)),
    ((1, 3, 3), (1, 1, 1), (0, 1, 1)),
    ((1, 6, 6), (1, 1, 1), (0, 0, 0)),
]
_AUD_POOL = {0: ((1, 1), (1, 1), (0, 0)), 1: ((3, 3), (1, 2), (0, 0)), 4: ((3, 3), (2, 2), (0, 0))}
_LIP_POOL = {
    0: ((1, 3, 3), (1, 2, 2), (0, 0, 0)),
    1: ((1, 3, 3), (1, 2, 2), (0, 1, 1)),
    4: ((1, 3, 3), (1, 2, 2), (0, 0, 0)),
}


class _Tower(nnx.Module):
    """Six conv + batch norm + ReLU blocks with max-pools, flattened channels-first, then Linear-BN-ReLU-Linear."""

    def __init__(self, cin: int, channels, convs, pools, fc_hidden: int, embed_dim: int, *, rngs: nnx.Rngs):
        convs_, norms = [], []
        for cout, (k, s, p) in zip(channels, convs, strict=True):
            convs_.append(nnx.Conv(cin, cout, kernel_size=k, strides=s, padding=[(q, q) for q in p], rngs=rngs))
            norms.append(nnx.BatchNorm(cout, use_running_average=True, epsilon=1e-5, rngs=rngs))
            cin = cout
        self.convs, self.norms = nnx.List(convs_), nnx.List(norms)
        self.pools = nnx.static(dict(pools))
        self.fc1 = nnx.Linear(cin, fc_hidden, rngs=rngs)
        self.fc_norm = nnx.BatchNorm(fc_hidden, use_running_average=True, epsilon=1e-5, rngs=rngs)
        self.fc2 = nnx.Linear(fc_hidden, embed_dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            x = jax.nn.relu(norm(conv(x)))
            if i in self.pools:
                k, s, p = self.pools[i]
                x = nnx.max_pool(x, k, strides=s, padding=[(q, q) for q in p])
        x = jnp.moveaxis(x, -1, 1).reshape(x.shape[0], -1)  # torch's view of (B, C, ...)
        return self.fc2(jax.nn.relu(self.fc_norm(self.fc1(x))))


class SyncNet(nnx.Module):
    def __init__(self, spec: SyncNetSpec = SyncNetSpec(), *, rngs: nnx.Rngs | None = None):
        rngs = rngs or nnx.Rngs(0)
        self.spec = spec
        self.audio = _Tower(1, spec.audio_channels, _AUD_CONV, _AUD_POOL, spec.fc_hidden, spec.embed_dim, rngs=rngs)
        self.lip = _Tower(3, spec.lip_channels, _LIP_CONV, _LIP_POOL, spec.fc_hidden, spec.embed_dim, rngs=rngs)

    def embed_audio(self, mfcc_windows: jax.Array) -> jax.Array:
        """(B, 13, 20) MFCC windows (coefficient x time) -> (B, D)."""
        return self.audio(mfcc_windows[..., None])

    def embed_lips(self, clips: jax.Array) -> jax.Array:
        """(B, 5, H, W, 3) BGR crops in 0..255 (224 x 224 for syncnet_v2) -> (B, D)."""
        return self.lip(clips)


def spec_from_state(state: dict) -> SyncNetSpec:
    def out(key):
        return int(state[key].shape[0])

    try:
        return SyncNetSpec(
            audio_channels=tuple(out(f"netcnnaud.{i}.weight") for i in CONV_IDX),
            lip_channels=tuple(out(f"netcnnlip.{i}.weight") for i in CONV_IDX),
            fc_hidden=out("netfcaud.0.weight"),
            embed_dim=out("netfcaud.3.weight"),
        )
    except KeyError as e:
        raise InputError(f"not a SyncNet state dict (netcnnaud / netcnnlip / netfcaud layout): missing {e}") from None


def load_syncnet(path: str | os.PathLike | None) -> SyncNet:
    """The SyncNet of a local ``syncnet_v2.model`` (legacy or zip ``torch.save`` state dict), no torch."""
    path = require_file(path, "SyncNet checkpoint syncnet_v2.model", FETCH_ADVICE)
    state = load_state_dict(path)
    spec = spec_from_state(state)
    model = build_abstract(lambda: SyncNet(spec))
    for name, tower in (("aud", model.audio), ("lip", model.lip)):
        for j, i in enumerate(CONV_IDX):
            set_conv(tower.convs[j], state, f"netcnn{name}.{i}", path)
            set_batch_norm(tower.norms[j], state, f"netcnn{name}.{i + 1}", path)
        set_linear(tower.fc1, state, f"netfc{name}.0", path)
        set_batch_norm(tower.fc_norm, state, f"netfc{name}.1", path)
        set_linear(tower.fc2, state, f"netfc{name}.3", path)
    assert_filled(model, path)
    return model


class SyncScores(NamedTuple):
    offset: int  # audio-visual offset in frames (upstream sign: 15 - argmin)
    confidence: float  # SyncC = median(mdist) - min(mdist)
    min_dist: float  # SyncD = min(mdist)
    mean_dists: np.ndarray  # (31,) mean distance for offsets -15..15


_lip_fn = nnx.jit(lambda m, x: m.embed_lips(x))
_aud_fn = nnx.jit(lambda m, x: m.embed_audio(x))


def features(model: SyncNet, frames: np.ndarray, audio: np.ndarray, *, fps: float = 25.0, batch: int = 20):
    """Lip and audio embeddings as upstream's evaluate makes them.

    frames (T, H, W, 3) RGB face crops (uint8 or float 0..255); audio (S,) 16 kHz float in [-1, 1].
    Returns (lip (L, D), aud (L, D)) with L = min(T, S // 640) - 5 (upstream's window count).
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError(f"frames must be (T, H, W, 3) RGB crops, got shape {frames.shape}")
    if fps != 25.0:
        raise InputError(f"SyncNet expects 25 fps video (4 MFCC frames per video frame), got {fps}")
    cc = mfcc_lib.mfcc(mfcc_lib.int16_scale(audio)).T.astype(np.float32)  # (13, F)
    length = min(len(frames), len(audio) // 640) - 5
    if length < 1:
        raise InputError(f"clip too short for SyncNet: {len(frames)} frames, {len(audio)} samples (need > 5 frames)")
    bgr = frames[..., ::-1].astype(np.float32)
    lips, auds = [], []
    batch = min(batch, length)
    for start in range(0, length, batch):
        idx = np.minimum(np.arange(start, start + batch), length - 1)  # one batch shape: one compile
        clips = np.stack([bgr[v : v + 5] for v in idx])
        windows = np.stack([cc[:, 4 * v : 4 * v + 20] for v in idx])
        lips.append(np.asarray(_lip_fn(model, jnp.asarray(clips))))
        auds.append(np.asarray(_aud_fn(model, jnp.asarray(windows))))
    return np.concatenate(lips)[:length], np.concatenate(auds)[:length]


def scores_from_features(lip: np.ndarray, aud: np.ndarray, vshift: int = VSHIFT) -> SyncScores:
    """Upstream's ``calc_pdist`` + offset / confidence: lip (L, D), aud (L, D) -> :class:`SyncScores`."""
    lip, aud = np.asarray(lip, np.float64), np.asarray(aud, np.float64)
    padded = np.pad(aud, ((vshift, vshift), (0, 0)))
    win = 2 * vshift + 1
    windows = np.stack([padded[i : i + win] for i in range(len(lip))])  # (L, win, D)
    dists = np.linalg.norm(lip[:, None, :] - windows + 1e-6, axis=-1)  # torch pairwise_distance, eps 1e-6
    mdist = dists.mean(0)
    idx = int(np.argmin(mdist))
    return SyncScores(vshift - idx, float(np.median(mdist) - mdist[idx]), float(mdist[idx]), mdist)


def sync_scores(model: SyncNet, frames: np.ndarray, audio: np.ndarray, *, fps: float = 25.0) -> SyncScores:
    """SyncC / SyncD of a talking-face clip: frames (T, H, W, 3) RGB face crops, audio (S,) at 16 kHz."""
    return scores_from_features(*features(model, frames, audio, fps=fps))
