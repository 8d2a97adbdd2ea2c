"""The gradient comparison's cosine over parameter pytrees (the report itself needs a trained run and teacher)."""

import jax.numpy as jnp
import pytest

from avatar_jax.train.vsd_gradients import cosine


def test_cosine_of_gradient_trees_spans_leaves_and_handles_zero():
    a = {"w": jnp.array([1.0, 0.0]), "b": jnp.array([[0.0]])}
    b = {"w": jnp.array([0.0, 0.0]), "b": jnp.array([[2.0]])}
    assert cosine(a, a) == pytest.approx(1.0)
    assert cosine(a, b) == pytest.approx(0.0)
    assert cosine(a, {"w": -3.0 * a["w"], "b": a["b"]}) == pytest.approx(-1.0)
    mixed = {"w": jnp.array([1.0, 0.0]), "b": jnp.array([[1.0]])}  # 45 degrees to a, across the two leaves
    assert cosine(a, mixed) == pytest.approx(2 ** -0.5)
    assert cosine(a, {"w": jnp.zeros(2), "b": jnp.zeros((1, 1))}) == 0.0
