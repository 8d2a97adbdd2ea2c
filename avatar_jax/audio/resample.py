"""Rational-ratio resampling with a polyphase, Kaiser-windowed-sinc anti-aliasing filter (numpy).

A rate change ``sr_in -> sr_out`` is ``up / down`` with ``up = sr_out/g``, ``down = sr_in/g`` and
``g = gcd``. Conceptually: insert ``up - 1`` zeros between samples, low-pass at the Nyquist frequency
of the lower of the two rates, keep every ``down``-th sample. The polyphase form never builds the
zero-stuffed signal: output ``k`` sits at input position ``k·down/up`` and is a ``Q``-tap dot product
of input samples with one of ``up`` sub-filters.

The filter is a sinc with cutoff ``1/max(up, down)`` (fraction of the upsampled Nyquist) times a
Kaiser window spanning ``zero_crossings`` sinc lobes on each side, normalised to unit DC gain. The
output is zero-phase (no delay) and the signal is zero-extended at both ends, so with
``zero_crossings=10, beta=5.0`` the result equals ``scipy.signal.resample_poly`` (its defaults).
Our defaults (16 lobes, beta 8.0) trade 60% more taps for a ~80 dB stopband instead of ~55 dB.

:class:`StreamResampler` consumes input in blocks with bounded memory and gives exactly the
one-shot result; :func:`resample` is the one-shot wrapper.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable

import numpy as np

from avatar_jax.errors import InputError

DEFAULT_ZERO_CROSSINGS = 16
DEFAULT_BETA = 8.0
_BLOCK = 1 << 16  # input samples per block in the one-shot path


def ratio(sr_in: int, sr_out: int) -> tuple[int, int]:
    """``(up, down)`` in lowest terms for a rate change ``sr_in -> sr_out`` (positive integers)."""
    if int(sr_in) != sr_in or int(sr_out) != sr_out or sr_in <= 0 or sr_out <= 0:
        raise InputError(f"sample rates must be positive integers, got {sr_in} -> {sr_out}")
    g = math.gcd(int(sr_in), int(sr_out))
    return int(sr_out) // g, int(sr_in) // g


def lowpass_filter(up: int, down: int, zero_crossings: int = DEFAULT_ZERO_CROSSINGS,
                   beta: float = DEFAULT_BETA) -> np.ndarray:
    """Anti-aliasing FIR at the upsampled rate, ``(2·zero_crossings·max(up,down) + 1,)`` float64.

    Symmetric, centred on the middle tap, DC gain 1 (the polyphase step multiplies by ``up``).
    """
    max_rate = max(up, down)
    half = zero_crossings * max_rate
    n = np.arange(-half, half + 1, dtype=np.float64)
    cutoff = 1.0 / max_rate
    h = cutoff * np.sinc(cutoff * n) * np.kaiser(2 * half + 1, beta)
    return h / h.sum()


@functools.lru_cache(maxsize=32)
def _polyphase_bank(up: int, down: int, zero_crossings: int, beta: float) -> tuple[np.ndarray, int]:
    """Sub-filters ``(up, Q)`` with taps reversed (so they dot ascending input windows), and ``half``.

    Output ``k`` uses phase ``r = (k·down + half) mod up`` and input samples
    ``n0-Q+1 .. n0`` with ``n0 = (k·down + half) // up``.
    """
    h = lowpass_filter(up, down, zero_crossings, beta) * up
    half = (h.size - 1) // 2
    q = -(-h.size // up)
    padded = np.zeros(up * q)
    padded[: h.size] = h
    bank = padded.reshape(q, up).T  # bank[r, j] = h[r + j·up]
    bank = np.ascontiguousarray(bank[:, ::-1])
    bank.setflags(write=False)
    return bank, half


class StreamResampler:
    """Block-wise resampler whose concatenated output equals :func:`resample` of the whole signal.

    ``push(block)`` returns the outputs that are already determined; ``flush()`` returns the rest
    (the right edge is zero-extended) and the total output length is ``ceil(n_in·up/down)``.
    Memory is bounded by the block size plus one filter length, whatever the signal length.
    """

    def __init__(self, sr_in: int, sr_out: int, zero_crossings: int = DEFAULT_ZERO_CROSSINGS,
                 beta: float = DEFAULT_BETA):
        self.up, self.down = ratio(sr_in, sr_out)
        self._bank, self._half = _polyphase_bank(self.up, self.down, int(zero_crossings), float(beta))
        self._q = self._bank.shape[1]
        # _buf holds input samples [_buf_start, _buf_start + len(_buf)); left edge zero-extended.
        self._buf = np.zeros(self._q, dtype=np.float64)
        self._buf_start = -self._q
        self._n_in = 0
        self._next_k = 0
        self._done = False

    def _anchor(self, k: np.ndarray | int):
        pos = np.asarray(k, dtype=np.int64) * self.down + self._half
        return pos // self.up, pos % self.up

    def _emit(self, k_end: int) -> np.ndarray:
        """Outputs ``_next_k .. k_end-1`` (all their input must already be in the buffer).

        Outputs ``up`` apart share a sub-filter and their windows start ``down`` input samples
        apart, so each phase is one matrix-vector product over a strided view (no gather copies).
        """
        n = k_end - self._next_k
        if n <= 0:
            return np.zeros(0)
        out = np.empty(n)
        windows = np.lib.stride_tricks.sliding_window_view(self._buf, self._q)
        for p in range(min(self.up, n)):
            count = len(range(p, n, self.up))
            n0, phase = self._anchor(self._next_k + p)
            row0 = int(n0) - self._q + 1 - self._buf_start
            rows = windows[row0:row0 + self.down * (count - 1) + 1:self.down]
            out[p::self.up] = rows @ self._bank[int(phase)]
        self._next_k = max(self._next_k, k_end)
        # drop input no later output can need
        n0_next, _ = self._anchor(self._next_k)
        drop = min(max(0, int(n0_next) - self._q + 1 - self._buf_start), self._buf.size)
        if drop:
            self._buf = self._buf[drop:].copy()
            self._buf_start += drop
        return out

    def push(self, block: np.ndarray) -> np.ndarray:
        """Feed ``(n,)`` samples; returns the newly determined outputs ``(m,)`` float32."""
        if self._done:
            raise RuntimeError("StreamResampler.push after flush")
        block = np.asarray(block, dtype=np.float64).reshape(-1)
        self._buf = np.concatenate([self._buf, block])
        self._n_in += block.size
        # output k is determined once its last input n0_k <= n_in - 1
        k_end = (self._n_in * self.up - 1 - self._half) // self.down + 1
        return self._emit(max(k_end, self._next_k)).astype(np.float32)

    def flush(self) -> np.ndarray:
        """Zero-extend the right edge and return the remaining outputs ``(m,)`` float32."""
        if self._done:
            return np.zeros(0, np.float32)
        self._done = True
        total = -(-self._n_in * self.up // self.down)
        if total <= self._next_k:
            return np.zeros(0, np.float32)
        n0_last, _ = self._anchor(total - 1)
        have_until = self._buf_start + self._buf.size - 1
        if n0_last > have_until:
            self._buf = np.concatenate([self._buf, np.zeros(int(n0_last - have_until))])
        return self._emit(total).astype(np.float32)


def resample(x: np.ndarray, sr_in: int, sr_out: int, zero_crossings: int = DEFAULT_ZERO_CROSSINGS,
             beta: float = DEFAULT_BETA) -> np.ndarray:
    """Resample ``(S,)`` from ``sr_in`` to ``sr_out``; returns ``(ceil(S·up/down),)`` float32.

    Equal rates return a float32 copy. Computation is float64 internally.
    """
    x = np.asarray(x)
    if x.ndim != 1:
        raise InputError(f"resample expects a mono (S,) signal, got shape {x.shape}")
    if sr_in == sr_out:
        return x.astype(np.float32, copy=True)
    rs = StreamResampler(sr_in, sr_out, zero_crossings, beta)
    # cache-sized blocks: each phase re-reads the buffer, which must stay small to be fast
    outs = [rs.push(x[i:i + _BLOCK]) for i in range(0, x.size, _BLOCK)]
    outs.append(rs.flush())
    return np.concatenate(outs)


def resample_blocks(blocks: Iterable[np.ndarray], sr_in: int, sr_out: int) -> np.ndarray:
    """Resample a stream of ``(n_i,)`` blocks; same result as :func:`resample` on their concatenation."""
    rs = StreamResampler(sr_in, sr_out)
    outs = [rs.push(b) for b in blocks]
    outs.append(rs.flush())
    return np.concatenate(outs)
