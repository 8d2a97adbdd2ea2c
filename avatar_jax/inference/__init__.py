"""Inference from an exported bundle: audio (or text) -> frames, streamed in chunks; no training code."""
