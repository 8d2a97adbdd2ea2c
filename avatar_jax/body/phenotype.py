"""Body shape from phenotype parameters, in JAX (our port of anny's macro-blendshape weighting).

A phenotype is six numbers in [0,1]: ``gender, age, muscle, weight, height, proportions`` (0.5 is
anny's default body). Each of the 26 phenotype *variations* (race, gender, age, ... anchors) gets a
piecewise-linear interpolation weight; a macro blendshape's weight is the product of the weights of
the variations it combines (``phenotype_mask``); those weights project onto the template's shape
basis. Race and the cup-size / firmness features stay at anny's neutral values.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from avatar_jax.body.template import BodyTemplate

PHENOTYPE_NAMES = ("gender", "age", "muscle", "weight", "height", "proportions")
DEFAULT_PHENOTYPE = (0.5,) * 6

# (feature, anchors) in anny's variation order; None marks race (fixed, 1/3 each).
_FEATURES = (
    ("race", None),
    ("gender", (0.0, 1.0)),
    ("age", (-1 / 3, 0.0, 1 / 3, 2 / 3, 1.0)),
    ("muscle", (0.0, 0.5, 1.0)),
    ("weight", (0.0, 0.5, 1.0)),
    ("height", (0.0, 1.0)),
    ("proportions", (0.0, 1.0)),
    ("cupsize", (0.0, 0.5, 1.0)),
    ("firmness", (0.0, 0.5, 1.0)),
)


def _hat_weights(value: jax.Array, anchors: tuple[float, ...]) -> jax.Array:
    """Linear-interpolation weights of ``value ()`` on evenly spaced ``anchors`` -> ``(n,)``, clamped."""
    a = jnp.asarray(anchors, jnp.float32)
    x = jnp.clip(value, a[0], a[-1])
    spacing = (anchors[-1] - anchors[0]) / (len(anchors) - 1)
    return jnp.maximum(0.0, 1.0 - jnp.abs(x - a) / spacing)


def variation_weights(phenotype: jax.Array) -> jax.Array:
    """``phenotype (6,)`` -> weights of the 26 phenotype variations ``(26,)``."""
    values = dict(zip(PHENOTYPE_NAMES, phenotype, strict=True))
    parts = []
    for feature, anchors in _FEATURES:
        if anchors is None:
            parts.append(jnp.full((3,), 1.0 / 3.0))
        else:
            parts.append(_hat_weights(values.get(feature, jnp.float32(0.5)), anchors))
    return jnp.concatenate(parts)


def macro_weights(template: BodyTemplate, phenotype: jax.Array) -> jax.Array:
    """``phenotype (6,)`` -> weight of each macro blendshape ``(S,)`` (product over its variations)."""
    mask = jnp.asarray(template.phenotype_mask, jnp.float32)  # (S, 26)
    w = variation_weights(phenotype)
    return jnp.prod(w[None] * mask + (1.0 - mask), axis=-1)


def shaped_rest(template: BodyTemplate, phenotype: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Rest-pose ``vertices (V,3)`` and joint positions ``(J,3)`` of the body with ``phenotype (6,)``."""
    phenotype = jnp.asarray(phenotype, jnp.float32)
    chex.assert_shape(phenotype, (len(PHENOTYPE_NAMES),))
    m = macro_weights(template, phenotype)
    coeff = m @ jnp.asarray(template.shape_projection)  # (R,)
    vertices = jnp.asarray(template.base_vertices) + jnp.einsum("r,rvc->vc", coeff, jnp.asarray(template.shape_basis))
    joint_coeff = m @ jnp.asarray(template.joint_shape_projection)
    joints = jnp.asarray(template.base_joints) + jnp.einsum(
        "r,rjc->jc", joint_coeff, jnp.asarray(template.joint_shape_basis)
    )
    return vertices, joints


def apply_expressions(template: BodyTemplate, vertices: jax.Array, expression: jax.Array) -> jax.Array:
    """Add facial action blendshapes: ``vertices (V,3)``, ``expression (X,)`` (ARKit names) -> ``(V,3)``."""
    chex.assert_shape(expression, (len(template.expression_names),))
    delta = jnp.einsum("x,xec->ec", expression, jnp.asarray(template.expression_deltas))
    return vertices.at[jnp.asarray(template.expression_vertices)].add(delta)
