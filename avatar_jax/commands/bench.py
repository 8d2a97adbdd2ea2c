"""``avatar-jax bench NAME``: run one benchmark (or ``all``) and write its results as JSON.

Each benchmark is a module with ``run(config, out_dir) -> dict``; it prints a table while it runs
and returns its numbers, which this command writes to ``OUT/bench_NAME.json``.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import time

import jax

from avatar_jax.errors import InputError, NotBuiltError

# name -> module path. A benchmark is listed only when its module exists.
BENCHMARKS: dict[str, str] = {
    "se3": "avatar_jax.bench.se3",
    "audio": "avatar_jax.bench.audio_encoders",
    "render": "avatar_jax.bench.render",
    "audio_io": "avatar_jax.bench.audio_io",
    "model": "avatar_jax.bench.model",
    "loader": "avatar_jax.bench.loader",
    "train": "avatar_jax.bench.train",
    "inference": "avatar_jax.bench.inference",
    "scaling": "avatar_jax.bench.scaling",
}


def add_arguments(parser):
    parser.add_argument("name", help=f"benchmark to run: {', '.join(BENCHMARKS)} or all")
    parser.add_argument("--out", default="out/bench", help="folder for the JSON results")


def _environment() -> dict:
    return {
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def run(args, config) -> int:
    names = list(BENCHMARKS) if args.name == "all" else [args.name]
    for name in names:
        if name not in BENCHMARKS:
            raise InputError(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)} or all")
    os.makedirs(args.out, exist_ok=True)
    for name in names:
        try:
            module = importlib.import_module(BENCHMARKS[name])
        except ModuleNotFoundError as e:
            raise NotBuiltError(f"benchmark {name!r} is not built yet ({e.name})") from e
        results = module.run(config, args.out)
        results["environment"] = _environment()
        path = os.path.join(args.out, f"bench_{name}.json")
        with open(path, "w") as f:
            json.dump(results, f, indent=2)
        print(f"wrote {path}")
    return 0
