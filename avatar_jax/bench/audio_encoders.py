"""Audio encoder throughput on this machine: seconds of audio encoded per wall-clock second.

Random weights (no download) in the shapes of wav2vec2-base (95M parameters, 10 s of 16 kHz audio per
call) and whisper-tiny (encoder on one 30 s window of 80-bin log-mel, plus greedy decoding of 32
tokens with the key/value cache). The numbers measure our XLA programs, not model quality.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from avatar_jax.audio.wav2vec2 import Wav2Vec2Model, Wav2Vec2Spec
from avatar_jax.audio.whisper import GenerationSettings, WhisperModel, WhisperSpec, greedy_decode
from avatar_jax.bench.timing import time_fn


def _num_params(model: nnx.Module) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _jitted_init(build):
    """Initialise under jit: one compiled program instead of hundreds of eager random ops."""
    graphdef, state = nnx.split(nnx.eval_shape(build))
    state = jax.jit(lambda: nnx.state(build()))()
    return nnx.merge(graphdef, state)


def run(config, out_dir) -> dict:
    del out_dir
    seed = int(getattr(config, "seed", 0))
    key = jax.random.key(seed)
    rows = []
    print(f"{'encoder':>16} {'params M':>9} {'audio s':>8} {'median s':>9} {'audio s / s':>12}")

    w2v = _jitted_init(lambda: Wav2Vec2Model(Wav2Vec2Spec(), rngs=nnx.Rngs(seed)))
    seconds = 10.0
    audio = 0.1 * jax.random.normal(key, (1, int(16000 * seconds)))
    graphdef, state = nnx.split(w2v)
    encode = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x).last_hidden_state)
    t = time_fn(encode, state, audio, repeats=3)["median"]
    rows.append(dict(name="wav2vec2-base", params=_num_params(w2v), audio_seconds=seconds, seconds=t,
                     audio_seconds_per_second=seconds / t))

    spec = WhisperSpec()
    settings = GenerationSettings(suppress_tokens=(), begin_suppress_tokens=(220, 50257))
    whisper = _jitted_init(lambda: WhisperModel(spec, rngs=nnx.Rngs(seed), generation=settings))
    seconds = 30.0
    mel = jax.random.normal(key, (1, spec.max_mel_frames, spec.num_mel_bins))
    graphdef, state = nnx.split(whisper)
    encode = jax.jit(lambda s, x: nnx.merge(graphdef, s).encoder(x).last_hidden_state)
    t = time_fn(encode, state, mel, repeats=3)["median"]
    rows.append(dict(name="whisper-tiny enc", params=_num_params(whisper), audio_seconds=seconds, seconds=t,
                     audio_seconds_per_second=seconds / t))
    for r in rows:
        print(f"{r['name']:>16} {r['params'] / 1e6:>9.1f} {r['audio_seconds']:>8.0f} {r['seconds']:>9.3f} "
              f"{r['audio_seconds_per_second']:>12.1f}")

    new_tokens = 32
    prompt = jnp.asarray([50258, 50259, 50359, 50363], jnp.int32)
    t = time_fn(lambda: greedy_decode(whisper, mel, prompt, new_tokens, settings), repeats=2)["median"]
    decode = dict(name="whisper-tiny greedy (encoder + 32 tokens)", seconds=t, tokens_per_second=new_tokens / t)
    print(f"whisper-tiny greedy: {new_tokens} tokens after a 30 s window in {t:.3f} s "
          f"({new_tokens / t:.1f} tokens/s incl. encoder)")
    return {"rows": rows, "decode": decode}
