"""Splat renderer: EWA projection, tile binning and sorting, rasterisation dispatch (pallas | xla).

``from avatar_jax.render import render`` is the entry point; ``reference`` (brute force per pixel)
and ``dense`` (every Gaussian against every pixel) are the slow ground truths used by tests and
the benchmark.
"""

from avatar_jax.render.renderer import CHUNK, RenderOutput, intersection_count, render

__all__ = ["CHUNK", "RenderOutput", "intersection_count", "render"]
