"""How much of each Gaussian a camera sees, and the photo colour it sees it with, from the renderer.

The rendered colour is linear in the per-Gaussian colours: ``rgb(p) = sum_i c_i alpha_i(p) T_i(p)``.
So the gradient of ``sum_p m(p) rgb(p)`` with respect to ``c_i`` is ``sum_p m(p) alpha_i(p) T_i(p)``:
the Gaussian's visible weight (its transmittance-weighted footprint, in pixels) inside the mask, and
the gradient of ``sum_p m(p) photo(p) . rgb(p)`` is the photo colour summed with those weights. One
vector-Jacobian product of the public ``render`` gives both for every Gaussian and camera; an occluded
Gaussian (a chest behind a hand) gets weight ~0 and never takes the occluder's colour.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from avatar_jax.geometry import camera as cam_lib
from avatar_jax.render import render


def visible_weights(means, quats, scales, opacities, camera: cam_lib.Camera, photo: jax.Array, mask: jax.Array,
                    capacity: int) -> tuple[jax.Array, jax.Array]:
    """Per-camera weights and weighted colours.

    Args: Gaussians ``means (N,3)``/``(B,N,3)`` etc. as :func:`render` takes them; ``camera`` single or
      a batch of ``B``; ``photo (H,W,3)``/``(B,H,W,3)`` and ``mask (H,W)``/``(B,H,W)`` at its resolution.
    Returns: ``weight (N,)``/``(B,N)`` (pixels), ``color_sum (N,3)``/``(B,N,3)`` (divide by weight).
    """
    lead = means.shape[:-1]

    def rgb_of(colors):
        return render(means, quats, scales, opacities, colors, camera, background=(0.0, 0.0, 0.0),
                      capacity=capacity, check_finite=False).rgb

    rgb, vjp = jax.vjp(rgb_of, jnp.zeros((*lead, 3), jnp.float32))
    m = jnp.broadcast_to(mask[..., None], rgb.shape).astype(jnp.float32)
    (w,) = vjp(m)
    (c,) = vjp(m * photo.astype(jnp.float32))
    return w.mean(-1), c
