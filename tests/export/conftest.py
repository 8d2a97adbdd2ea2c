"""One tiny exported bundle (cpu, cuda, tpu at 64x64) shared by the bundle, render and memory tests.

The model's parameters are pushed away from their initialisation (which holds the rest pose), so the
avatar visibly moves with the audio and frame equality checks mean something.
"""

import dataclasses

import jax
import numpy as np
import pytest
import soundfile
from flax import nnx

from avatar_jax.config import load_config
from avatar_jax.export.bundle import export_bundle
from avatar_jax.model.canonical import synthetic_avatar
from avatar_jax.model.talking import TalkingAvatar

RES = (64, 64)
SR = 16000


@dataclasses.dataclass
class Exported:
    path: str
    config: object
    graphdef: object
    params: object
    avatar: object


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise bursts under a syllable-rate envelope (energy that comes and goes like speech)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t) ** 2
    return (0.2 * envelope * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Exported:
    c = load_config("tiny")
    with c.unlocked():
        c.model.num_particles, c.model.d_model = 16, 32
        c.model.twist_scale, c.model.residual_scale = 0.5, 1.0
        c.audio.embedded_dim, c.audio.embedded_width = 32, 32
    model = TalkingAvatar(c, nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    keys = iter(jax.random.split(jax.random.key(1), len(jax.tree.leaves(params))))
    params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(next(keys), p.shape, p.dtype), params)
    avatar = synthetic_avatar(300, 16)
    path = str(tmp_path_factory.mktemp("bundle") / "avatar.bundle")
    export_bundle(path, config=c, graphdef=graphdef, params=params, avatar=avatar, resolutions=[RES])
    return Exported(path, c, graphdef, params, avatar)


@pytest.fixture
def wav(tmp_path):
    path = tmp_path / "speech.wav"
    soundfile.write(path, speech_like(1.3), SR)
    return str(path)
