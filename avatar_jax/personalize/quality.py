"""Quality gate of a single-photo reconstruction: what was measured, against which bar, and verdicts.

Bars (defaults, checked in :func:`judge`): keypoint reprojection error of the body fit under 3 % of the
image height (a wrong pose or a wrong person shows up here first), PSNR inside the person mask at
least 25 dB and SSIM there at least 0.7 (the render matches the photo), and at least 15 % of the
body surface seen by the photo (below that most of the avatar is guessed). A failed bar is a warning;
``reconstruct --strict`` turns any warning into a non-zero exit.
"""

from __future__ import annotations

import math

BARS = dict(keypoint_error_fraction_of_height=("<", 0.03), psnr_in_mask_db=(">=", 25.0),
            ssim_in_mask=(">=", 0.7), seen_surface_share=(">=", 0.15))


def judge(report: dict, bars: dict | None = None) -> list[str]:
    """One warning line per failed (or unmeasurable) bar of ``report``; empty when all pass."""
    warnings = []
    for key, (op, bar) in (bars or BARS).items():
        value = report.get(key, float("nan"))
        ok = math.isfinite(value) and (value < bar if op == "<" else value >= bar)
        if not ok:
            warnings.append(f"{key.replace('_', ' ')} is {value:.4g}, the bar is {op} {bar:g}")
    return warnings
