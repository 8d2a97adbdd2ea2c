"""Pallas kernels, installed as `avatar_jax.kernels`. Each kernel ships a jnp reference and a custom_vjp."""
