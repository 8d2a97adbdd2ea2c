"""Splat renderer: EWA projection, tile binning and sorting, rasterisation dispatch (pallas | xla).

``from avatar_jax.render import render`` is the entry point; ``reference`` (brute force per pixel)
and ``dense`` (every Gaussian against every pixel) are the slow ground truths used by tests and
the benchmark.
"""

from jax import export as _export

from avatar_jax.render.renderer import CHUNK, RenderOutput, intersection_count, render

# So that an exported render (jax.export) returning RenderOutput survives serialize / deserialize.
_export.register_namedtuple_serialization(RenderOutput, serialized_name="avatar_jax.render.RenderOutput")

__all__ = ["CHUNK", "RenderOutput", "intersection_count", "render"]
