"""Load any common audio file (or array) as 16 kHz mono float32 in [-1, 1], with a report of what was done.

Decoding: libsndfile (through ``soundfile``: wav, flac, ogg/vorbis/opus, mp3, aiff, ...) and, for what it
cannot read (m4a/aac, mp4, webm, ...), the ``ffmpeg`` binary bundled with ``imageio-ffmpeg``. Files are
read in blocks: each block is mixed to mono (mean of the channels), checked, and fed to the streaming
polyphase resampler, so memory stays bounded by the 16 kHz output plus one block, whatever the length.

Policies for awkward input (each one is tested in ``tests/audio/test_io.py``):

- missing file, undecodable file (e.g. a PNG renamed ``.wav``), zero samples, NaN/inf samples,
  more than one sample rate given: :class:`InputError` naming the file and what is supported.
- clipping: samples at full scale (``|x| >= 0.999``) are counted; above 0.1% of samples an
  :class:`AudioWarning` reports the clipped fraction. Audio is kept as is.
- float input beyond [-1, 1]: scaled down by its peak (warning); integer arrays are scaled by their
  type's full scale. Resampling overshoot past ±1 is hard-clipped.
- sample rate below 16 kHz (e.g. 8 kHz telephone audio): resampled up, with a warning that the band
  above the source Nyquist is empty.
- stereo / multichannel: mixed to mono.
- silence (RMS below -60 dBFS, e.g. all zeros): *allowed* here and in features (the report says
  ``silent=True`` and a warning is issued), because silent stretches are legitimate encoder input.
  The avatar's driving path must call :func:`require_speech_energy`, which raises
  ``InputError("... no speech energy ...")``: a silent clip cannot drive an avatar.

:func:`normalize_utterance` is the wav2vec2 input normalisation (zero mean, unit variance, eps 1e-7),
kept separate because Whisper and the embedded encoder take un-normalised audio.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import warnings
from collections.abc import Iterator

import numpy as np

from avatar_jax.audio.resample import StreamResampler
from avatar_jax.errors import InputError

SAMPLE_RATE = 16000
CLIP_LEVEL = 0.999  # |x| at or above this is full scale (int16 full scale is 32767/32768 = 0.99997)
CLIP_WARN_FRACTION = 1e-3
SILENCE_DBFS = -60.0
WAV2VEC2_EPS = 1e-7  # epsilon of the upstream wav2vec2 feature extractor's variance normalisation
BLOCK_FRAMES = 1 << 17  # source frames decoded per block (~3 s at 44.1 kHz)
SUPPORTED = ("wav, flac, ogg (vorbis/opus), mp3, aiff, au, caf (libsndfile); m4a/aac, mp4, webm, mka and other "
             "containers ffmpeg can decode (bundled ffmpeg from imageio-ffmpeg)")


class AudioWarning(UserWarning):
    """Audio was usable but something about it deserves attention (clipping, silence, low rate)."""


@dataclasses.dataclass(frozen=True)
class AudioReport:
    """What :func:`load_audio_with_report` found and did. Levels are measured on the mono source."""

    source: str
    decoder: str  # "soundfile" | "ffmpeg" | "array"
    source_rate: int
    channels: int
    source_samples: int  # frames per channel before resampling
    num_samples: int  # samples returned (16 kHz)
    resampled: bool
    upsampled: bool
    peak: float
    rms_dbfs: float
    clipped_fraction: float
    rescaled: bool  # float input exceeded [-1, 1] and was scaled by 1/peak
    silent: bool
    warnings: tuple[str, ...] = ()

    @property
    def duration_s(self) -> float:
        return self.num_samples / SAMPLE_RATE


# ---------------------------------------------------------------------------------------------- decoders

def _soundfile_blocks(path: str) -> tuple[int, int, Iterator[np.ndarray]]:
    import soundfile as sf

    f = sf.SoundFile(path)  # raises on formats libsndfile does not know

    def gen():
        with f:
            while True:
                block = f.read(BLOCK_FRAMES, dtype="float32", always_2d=True)
                if block.shape[0] == 0:
                    return
                yield block

    return int(f.samplerate), int(f.channels), gen()


_LAYOUT_CHANNELS = {"mono": 1, "stereo": 2, "2.1": 3, "3.0": 3, "quad": 4, "4.0": 4, "5.0": 5, "5.1": 6,
                    "6.0": 6, "6.1": 7, "7.0": 7, "7.1": 8}


def _ffmpeg_probe(exe: str, path: str) -> tuple[int, int]:
    """Sample rate and channel count of the first audio stream, parsed from ``ffmpeg -i`` output."""
    proc = subprocess.run([exe, "-hide_banner", "-nostdin", "-i", path], capture_output=True, text=True,
                          errors="replace", timeout=60)
    for line in proc.stderr.splitlines():
        m = re.search(r"Stream #\d+:\d+.*?: Audio: .*?(\d+) Hz, ([^,]+)", line)
        if m:
            layout = m.group(2).strip().split("(")[0].strip()
            n = _LAYOUT_CHANNELS.get(layout)
            if n is None:
                m2 = re.match(r"(\d+) channels", layout)
                n = int(m2.group(1)) if m2 else 2
            return int(m.group(1)), n
    raise InputError(f"ffmpeg found no audio stream in {path!r}")


def _ffmpeg_blocks(path: str) -> tuple[int, int, Iterator[np.ndarray]]:
    import imageio_ffmpeg

    exe = imageio_ffmpeg.get_ffmpeg_exe()
    rate, channels = _ffmpeg_probe(exe, path)
    # -ac/-ar equal to the probed values are no-ops that pin the interleaved layout we parse
    cmd = [exe, "-hide_banner", "-nostdin", "-loglevel", "error", "-i", path, "-map", "0:a:0", "-vn",
           "-ac", str(channels), "-ar", str(rate), "-f", "f32le", "-acodec", "pcm_f32le", "pipe:1"]

    def gen():
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            nbytes = BLOCK_FRAMES * channels * 4
            while True:
                data = proc.stdout.read(nbytes)
                if not data:
                    break
                usable = len(data) - len(data) % (4 * channels)
                yield np.frombuffer(data[:usable], dtype="<f4").reshape(-1, channels)
            err = proc.stderr.read().decode(errors="replace").strip()
            if proc.wait() != 0:
                raise InputError(f"ffmpeg could not decode {path!r}: {err.splitlines()[-1] if err else 'error'}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    return rate, channels, gen()


def _array_blocks(x: np.ndarray) -> tuple[int, Iterator[np.ndarray]]:
    if x.dtype == np.bool_ or np.iscomplexobj(x) or not np.issubdtype(x.dtype, np.number):
        raise InputError(f"audio array must be real numbers, got dtype {x.dtype}")
    if x.ndim == 1:
        x = x[:, None]
    elif x.ndim == 2:
        # (S, C) like soundfile; (C, S) accepted when it is unambiguous (few rows, many columns)
        if x.shape[0] <= 8 < x.shape[1]:
            x = x.T
    else:
        raise InputError(f"audio array must be (S,) or (S, channels), got shape {x.shape}")
    if np.issubdtype(x.dtype, np.unsignedinteger):
        half = float(np.iinfo(x.dtype).max // 2 + 1)
        scale, offset = 1.0 / half, -half
    elif np.issubdtype(x.dtype, np.integer):
        scale, offset = 1.0 / float(-np.iinfo(x.dtype).min), 0.0
    else:
        scale, offset = 1.0, 0.0

    def gen():
        for i in range(0, x.shape[0], BLOCK_FRAMES):
            yield (x[i:i + BLOCK_FRAMES].astype(np.float64) + offset) * scale

    return x.shape[1], gen()


def _open(source) -> tuple[str, str, int | None, int, Iterator[np.ndarray]]:
    if isinstance(source, np.ndarray) or (hasattr(source, "__array__") and not isinstance(source, str | bytes)):
        channels, blocks = _array_blocks(np.asarray(source))
        return "<array>", "array", None, channels, blocks
    path = os.fspath(source)
    if not os.path.exists(path):
        raise InputError(f"audio file not found: {path!r}")
    if os.path.isdir(path):
        raise InputError(f"expected an audio file, got a directory: {path!r}")
    if os.path.getsize(path) == 0:
        raise InputError(f"audio file {path!r} is empty (0 bytes)")
    try:
        rate, channels, blocks = _soundfile_blocks(path)
        return path, "soundfile", rate, channels, blocks
    except Exception as sf_error:  # libsndfile cannot read it: try ffmpeg
        try:
            rate, channels, blocks = _ffmpeg_blocks(path)
            return path, "ffmpeg", rate, channels, blocks
        except Exception as ff_error:
            raise InputError(
                f"cannot decode {path!r} as audio (libsndfile: {sf_error}; ffmpeg: {ff_error}). "
                f"Supported: {SUPPORTED}"
            ) from ff_error


# ---------------------------------------------------------------------------------------------- loading

def _guarded(blocks: Iterator[np.ndarray], name: str) -> Iterator[np.ndarray]:
    """Turn a decoder failure in the middle of a file (truncated, corrupt) into an InputError."""
    try:
        yield from blocks
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"failed while decoding {name!r}: {e}") from e


def load_audio_with_report(path_or_array, sample_rate: int | None = None) -> tuple[np.ndarray, int, AudioReport]:
    """Decode, mix to mono, check and resample to 16 kHz.

    Args:
      path_or_array: a file path, or an array ``(S,)`` / ``(S, C)`` (``(C, S)`` if ``C <= 8 < S``);
        float arrays are taken as [-1, 1], integer arrays are scaled by their full scale.
      sample_rate: rate of an array input (default 16000, the project rate). For a file it is
        optional; if given it must equal the file's rate.
    Returns:
      ``(audio (S16,) float32 in [-1, 1], 16000, AudioReport)``.
    """
    name, decoder, file_rate, channels, blocks = _open(path_or_array)
    if decoder == "array":
        rate = SAMPLE_RATE if sample_rate is None else sample_rate
    else:
        rate = file_rate
        if sample_rate is not None and int(sample_rate) != rate:
            raise InputError(f"{name!r} is {rate} Hz but sample_rate={sample_rate} was given")
    if int(rate) != rate or rate <= 0:
        raise InputError(f"sample rate must be a positive integer, got {rate}")
    rate = int(rate)

    resampler = StreamResampler(rate, SAMPLE_RATE) if rate != SAMPLE_RATE else None
    outs: list[np.ndarray] = []
    n_in = 0
    n_clipped = 0
    sum_sq = 0.0
    peak = 0.0
    n_at_peak = 0
    for block in _guarded(blocks, name):
        if block.shape[0] == 0:
            continue
        finite = np.isfinite(block)
        if not finite.all():
            bad = int(np.argmin(finite.all(axis=1)))
            count = int(block.size - finite.sum())
            raise InputError(f"{name!r} contains {count} NaN/inf sample(s); the first at sample {n_in + bad}")
        # per-column loops: numpy reductions along a short axis 1 are slow
        mono = block[:, 0].astype(np.float64)
        frame_peak = np.abs(block[:, 0])
        for c in range(1, block.shape[1]):
            mono += block[:, c]
            np.maximum(frame_peak, np.abs(block[:, c]), out=frame_peak)
        if block.shape[1] > 1:
            mono /= block.shape[1]
        n_clipped += int(np.count_nonzero(frame_peak >= CLIP_LEVEL))
        # samples at the running maximum (flat tops of a float signal clipped above 1.0)
        block_peak = float(frame_peak.max())
        if block_peak > peak * (1 + 1e-6):
            peak, n_at_peak = block_peak, 0
        n_at_peak += int(np.count_nonzero(frame_peak >= peak * (1 - 1e-6)))
        sum_sq += float(np.dot(mono, mono))
        n_in += mono.size
        outs.append(resampler.push(mono) if resampler else mono.astype(np.float32))
    if n_in == 0:
        raise InputError(f"{name!r} contains no audio samples")
    if resampler:
        outs.append(resampler.flush())
    audio = np.concatenate(outs)

    notes = []
    rescaled = peak > 1.0
    clipped_fraction = n_clipped / n_in
    if rescaled:
        audio /= np.float32(peak)
        notes.append(f"samples exceed [-1, 1] (peak {peak:.3f}); scaled down by the peak")
        clipped_fraction = n_at_peak / n_in  # full scale is now the peak
    np.clip(audio, -1.0, 1.0, out=audio)
    if clipped_fraction > CLIP_WARN_FRACTION:
        notes.append(f"{100 * clipped_fraction:.2f}% of samples are at full scale (clipped audio)")
    rms = np.sqrt(sum_sq / n_in)
    rms_dbfs = float(20 * np.log10(rms)) if rms > 0 else float("-inf")
    silent = rms_dbfs < SILENCE_DBFS
    if silent:
        notes.append(f"audio is silent (RMS {rms_dbfs:.1f} dBFS < {SILENCE_DBFS} dBFS)")
    if rate < SAMPLE_RATE:
        notes.append(f"input is {rate} Hz: resampled up to {SAMPLE_RATE} Hz; nothing above {rate // 2} Hz")
    for note in notes:
        warnings.warn(f"{name}: {note}", AudioWarning, stacklevel=3)
    report = AudioReport(
        source=name, decoder=decoder, source_rate=rate, channels=channels, source_samples=n_in,
        num_samples=int(audio.size), resampled=resampler is not None, upsampled=rate < SAMPLE_RATE,
        peak=peak, rms_dbfs=rms_dbfs, clipped_fraction=clipped_fraction,
        rescaled=rescaled, silent=silent, warnings=tuple(notes),
    )
    return audio, SAMPLE_RATE, report


def load_audio(path_or_array, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """``(audio (S,) float32 mono in [-1, 1] at 16 kHz, 16000)``; see :func:`load_audio_with_report`."""
    audio, sr, _ = load_audio_with_report(path_or_array, sample_rate)
    return audio, sr


def require_speech_energy(audio: np.ndarray, name: str = "audio", threshold_dbfs: float = SILENCE_DBFS) -> None:
    """Raise InputError when ``audio (S,)`` has no speech energy (RMS below ``threshold_dbfs``).

    The driving path calls this: a silent clip gives the avatar nothing to follow.
    """
    x = np.asarray(audio, dtype=np.float64)
    if x.size == 0:
        raise InputError(f"{name} contains no samples")
    rms = float(np.sqrt(np.mean(np.square(x))))
    level = 20 * np.log10(rms) if rms > 0 else float("-inf")
    if level < threshold_dbfs:
        raise InputError(f"{name} has no speech energy (RMS {level:.1f} dBFS < {threshold_dbfs} dBFS); "
                         "give audio with someone speaking")


def normalize_utterance(audio: np.ndarray, lengths: np.ndarray | None = None, eps: float = WAV2VEC2_EPS) -> np.ndarray:
    """wav2vec2 input normalisation: ``(x - mean) / sqrt(var + eps)`` per utterance.

    ``audio`` is ``(S,)`` or ``(B, S)``; with ``lengths (B,)`` only the first ``lengths[b]`` samples count
    and the padding is set to 0 (as upstream does for padded batches). Returns float32, same shape.
    """
    x = np.asarray(audio, dtype=np.float64)
    squeeze = x.ndim == 1
    x = np.atleast_2d(x)
    if x.ndim != 2:
        raise InputError(f"normalize_utterance expects (S,) or (B, S), got shape {np.shape(audio)}")
    lens = np.full(x.shape[0], x.shape[1]) if lengths is None else np.asarray(lengths, dtype=np.int64)
    out = np.zeros_like(x)
    for b, n in enumerate(lens):
        seg = x[b, :n]
        out[b, :n] = (seg - seg.mean()) / np.sqrt(seg.var() + eps)
    out = out.astype(np.float32)
    return out[0] if squeeze else out
