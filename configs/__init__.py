"""Configs shipped with avatar-jax (installed as ``avatar_jax.configs``): tiny, base, pod."""
