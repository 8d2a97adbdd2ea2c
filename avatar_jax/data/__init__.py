"""Training data: clip records (ArrayRecord), identity-aware splits, grain loaders, video preparation and
synthetic talking clips. See :mod:`avatar_jax.data.schema` for the record layout."""
