"""Audio front-end throughput, in seconds of audio processed per wall-clock second.

Rows: decoding + mixing + resampling a 44.1 kHz stereo wav (``load_audio``), the resampler alone from
common rates, Whisper log-mel (jitted), the embedded encoder (jitted, default size) with the
frame-rate conversion, and eSpeak TTS. Audio is synthetic (tones + noise), written to a temp file.
"""

from __future__ import annotations

import os
import tempfile

import jax
import numpy as np
from flax import nnx

from avatar_jax.audio.embedded import EmbeddedAudioEncoder
from avatar_jax.audio.features import log_mel_spectrogram, to_frame_rate
from avatar_jax.audio.io import load_audio
from avatar_jax.audio.resample import resample
from avatar_jax.bench.timing import time_fn


def _signal(rng, seconds, rate, channels=1):
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * 220 * t * (1 + 0.1 * np.sin(2 * np.pi * 0.5 * t)))[:, None]
    return (x + 0.02 * rng.standard_normal((t.size, channels))).astype(np.float32)


def run(config, out_dir) -> dict:
    import soundfile as sf

    rng = np.random.default_rng(config.seed)
    fps = float(config.audio.fps)
    rows = []

    def add(name, seconds, timing):
        rate = seconds / timing["median"]
        rows.append(dict(name=name, audio_s=seconds, median_s=timing["median"], audio_s_per_s=rate))
        print(f"{name:<44} {seconds:>8.1f} {timing['median'] * 1e3:>10.1f} {rate:>12.1f}")

    print(f"{'stage':<44} {'audio s':>8} {'ms':>10} {'audio s/s':>12}")
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        path = os.path.join(tmp, "bench.wav")
        sf.write(path, _signal(rng, 60.0, 44100, 2), 44100, subtype="PCM_16")
        add("load_audio wav 44.1k stereo -> 16k", 60.0, time_fn(lambda: load_audio(path)[0], repeats=3))

    for rate in (44100, 48000, 22050, 8000):
        x = _signal(rng, 60.0, rate)[:, 0]
        add(f"resample {rate} -> 16000", 60.0, time_fn(lambda x=x, r=rate: resample(x, r, 16000), repeats=3))

    audio = _signal(rng, 30.0, 16000)[:, 0]
    for n_mels in (80, 128):
        add(f"log-mel {n_mels} (jit)", 30.0, time_fn(lambda n=n_mels: log_mel_spectrogram(audio, n)))

    encoder = EmbeddedAudioEncoder(rngs=nnx.Rngs(config.seed))
    frames = int(30.0 * fps)
    encode = nnx.jit(lambda m, a: to_frame_rate(m(a), m.feature_rate, fps, frames, m.feature_offset_s))
    params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(encoder, nnx.Param)))
    add(f"embedded encoder {params / 1e6:.2f}M params -> {fps:g} fps (jit)", 30.0,
        time_fn(lambda: encode(encoder, audio)))

    try:
        from avatar_jax.audio.tts import synthesize

        text = "The quick brown fox jumps over the lazy dog, and the avatar says hello to everyone here."
        speech_s = synthesize(text)[0].size / 16000
        add("espeak TTS -> 16k", speech_s, time_fn(lambda: synthesize(text)[0], repeats=3))
    except Exception as e:  # TTS is optional for the rest of the front end
        print(f"espeak TTS skipped: {e}")
    return {"rows": rows, "encoder_params": params, "fps": fps, "device": str(jax.devices()[0])}
