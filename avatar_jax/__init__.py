"""avatar-jax: audio-driven, full-body 3D Gaussian talking avatars from a single photo."""

__version__ = "0.1.0"
