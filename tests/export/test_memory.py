"""Streaming long audio keeps memory bounded: the peak resident memory while rendering 60 s of audio is
within 1.5x of the peak for 5 s (one fresh process, peak reset between the runs)."""

import json
import os
import subprocess
import sys
import textwrap

MEASURE = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    from avatar_jax.export.loader import load_bundle
    from avatar_jax.inference.cameras import camera_path
    from avatar_jax.inference.render_video import render_video

    bundle_path, work = sys.argv[1:3]

    def speech(seconds):
        t = np.arange(int(seconds * 16000)) / 16000
        rng = np.random.default_rng(0)
        return (0.2 * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2) * rng.standard_normal(t.size)).astype(np.float32)

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(key)

    bundle = load_bundle(bundle_path)
    path = camera_path(bundle.front, 64, 64, "orbit", period_frames=50)
    render_video(bundle, speech(1.0), os.path.join(work, "warm.mp4"), path, chunk=25, progress=False)
    out = {}
    for seconds in (5, 60):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak (VmHWM) to the current resident size
        before = status("VmRSS")
        stats = render_video(bundle, speech(seconds), os.path.join(work, f"{seconds}.mp4"), path, chunk=25,
                             progress=False)
        out[seconds] = dict(peak=status("VmHWM"), before=before, frames=stats.frames)
    print(json.dumps(out))
""")


def test_sixty_seconds_peak_memory_within_1_5x_of_five(tiny_bundle, tmp_path):
    res = subprocess.run([sys.executable, "-c", MEASURE, tiny_bundle.path, str(tmp_path)], capture_output=True,
                         text=True, timeout=900, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert res.returncode == 0, res.stderr[-2000:]
    m = json.loads(res.stdout.strip().splitlines()[-1])
    short, long = m["5"], m["60"]
    assert (short["frames"], long["frames"]) == (125, 1500)
    print(f"peak RSS: 5 s {short['peak'] / 2**20:.0f} MiB, 60 s {long['peak'] / 2**20:.0f} MiB")
    assert long["peak"] <= 1.5 * short["peak"]
