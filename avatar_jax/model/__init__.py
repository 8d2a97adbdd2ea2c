"""The audio-driven avatar: fusion, particle deformer, skinning, Gaussian head."""
