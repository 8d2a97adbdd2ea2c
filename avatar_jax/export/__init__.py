"""Exports: talking videos (mp4 with audio) and, later, inference bundles."""
