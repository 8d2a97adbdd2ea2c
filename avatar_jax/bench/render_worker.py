"""Worker process of ``bench render``: times one renderer's jitted forward on request, over a pipe.

``python -m avatar_jax.bench.render_worker [--overlay DIR]`` loads ``avatar_jax.render`` and
``avatar_jax.kernels`` from ``DIR/avatar_jax/render`` and ``DIR/kernels`` (the repository layout) when
given (an older revision of the renderer, extracted from git by :mod:`avatar_jax.bench.render`), else
the installed ones; every other module (cameras, errors) is the installed one. So two workers, the
current renderer and an old one, can be timed alternately on the same inputs by one parent
(``A, B, A, B, ...``) while each sits idle, blocked on its pipe, during the other's turn.

Protocol: one JSON object per line on stdin, one reply per line on stdout.

* ``{"cmd": "setup", "scene": NPZ, "size": S, "cameras": B}``: load the scene (means, quats, scales,
  opacities, colors), build the bench cameras, size ``capacity`` from this renderer's own
  ``intersection_count`` (rounded up to a multiple of 1024, as a training step would pass it), compile
  the forward and run it once; reply ``{"capacity", "compile_s"}``.
* ``{"cmd": "time", "repeats": R}``: ``R`` forward runs; reply ``{"cpu_s": [...], "wall_s": [...]}``
  (process CPU time and wall clock of each run, blocking on the result).
* ``{"cmd": "image", "path": NPY}``: save the last forward's ``rgb`` there (to compare renderers).
* ``{"cmd": "quit"}``.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.util
import inspect
import json
import os
import sys
import time

# Packages an overlay replaces: module prefix -> folder name inside the overlay.
OVERLAID = {"avatar_jax.render": "avatar_jax/render", "avatar_jax.kernels": "kernels"}


class _OverlayFinder(importlib.abc.MetaPathFinder):
    """Finds ``avatar_jax.render[.x]`` and ``avatar_jax.kernels[.x]`` under ``root`` before any other finder."""

    def __init__(self, root: str):
        self.root = root

    def find_spec(self, fullname, path=None, target=None):
        for prefix, folder in OVERLAID.items():
            if fullname == prefix or fullname.startswith(prefix + "."):
                base = os.path.join(self.root, folder, *fullname[len(prefix):].split(".")[1:])
                if os.path.isdir(base):
                    return importlib.util.spec_from_file_location(
                        fullname, os.path.join(base, "__init__.py"), submodule_search_locations=[base])
                if os.path.isfile(base + ".py"):
                    return importlib.util.spec_from_file_location(fullname, base + ".py")
                return None
        return None


def install_overlay(root: str) -> None:
    """Make the next imports of the renderer packages come from ``root`` (call before importing them)."""
    for prefix, folder in OVERLAID.items():
        if not os.path.isfile(os.path.join(root, folder, "__init__.py")):
            raise SystemExit(f"render_worker: {root!r} has no {folder}/__init__.py; expected an extracted revision")
        if any(m == prefix or m.startswith(prefix + ".") for m in sys.modules):
            raise SystemExit(f"render_worker: {prefix} was imported before the overlay was installed")
    sys.meta_path.insert(0, _OverlayFinder(root))


class _Session:
    def __init__(self):
        import jax

        from avatar_jax import render as render_pkg

        self.jax = jax
        self.render_pkg = render_pkg
        self.fwd = None
        self.args = None
        self.rgb = None

    def setup(self, scene: str, size: int, cameras: int) -> dict:
        import jax.numpy as jnp
        import numpy as np

        from avatar_jax.geometry import orbit

        jax = self.jax
        with np.load(scene) as z:
            args = tuple(jnp.asarray(z[k]) for k in ("means", "quats", "scales", "opacities", "colors"))
        cam = orbit(cameras, radius=3.0, width=size, height=size, fov_y_deg=40.0, elevation_deg=5.0)
        if cameras == 1:
            cam = cam[0]
        count = self.render_pkg.intersection_count
        # Older renderers count without opacities (an upper bound there); pass them where accepted.
        if "opacities" in inspect.signature(count).parameters:
            hits = count(*args[:3], cam, args[3], backend="xla")
        else:
            hits = count(*args[:3], cam)
        capacity = -(-int(hits) // 1024) * 1024
        render = self.render_pkg.render
        # check_finite=False: the old renderer ran it as a host callback inside jit; today's skips it
        # under tracing. Leaving it out of both times the rendering work alone.
        self.fwd = jax.jit(lambda *a: render(*a, cam, backend="xla", capacity=capacity, check_finite=False).rgb)
        self.args = args
        start = time.perf_counter()
        self.rgb = jax.block_until_ready(self.fwd(*args))
        return {"capacity": capacity, "compile_s": time.perf_counter() - start}

    def time(self, repeats: int) -> dict:
        if self.fwd is None:
            raise ValueError("time before setup")
        cpu, wall = [], []
        for _ in range(repeats):
            w, c = time.perf_counter(), time.process_time()
            self.rgb = self.jax.block_until_ready(self.fwd(*self.args))
            wall.append(time.perf_counter() - w)
            cpu.append(time.process_time() - c)
        return {"cpu_s": cpu, "wall_s": wall}

    def image(self, path: str) -> dict:
        import numpy as np

        np.save(path, np.asarray(self.rgb))
        return {"path": path}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--overlay", default=None,
                        help="folder holding avatar_jax/render/ and kernels/ of another revision")
    opts = parser.parse_args(argv)
    if opts.overlay:
        install_overlay(opts.overlay)
    session = _Session()
    out = sys.stdout
    sys.stdout = sys.stderr  # anything the renderer prints must not corrupt the reply stream
    from avatar_jax.kernels import splat

    print(json.dumps({"ready": True, "render_file": session.render_pkg.__file__, "kernels_file": splat.__file__}),
          file=out, flush=True)
    for line in sys.stdin:
        msg = json.loads(line)
        cmd = msg.pop("cmd")
        if cmd == "quit":
            break
        try:
            reply = getattr(session, cmd)(**msg)
        except Exception as e:  # reported to the parent, which raises it with this worker's name
            reply = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(reply), file=out, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
