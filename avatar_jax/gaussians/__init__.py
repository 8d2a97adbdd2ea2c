"""Gaussian clouds: the avatar's canonical Gaussians, initialisation on the template, .ply I/O."""
