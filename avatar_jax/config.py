"""Loading, overriding and validating ml_collections configs.

A config is a Python file with ``get_config(arg: str | None) -> ConfigDict`` (big_vision style).
It is named on the command line as ``--config configs/tiny.py[:arg]`` (a path) or ``--config tiny``
(a config shipped in the package as ``avatar_jax.configs.tiny``), and refined with
``--config.key.sub=value`` overrides that must name an existing key and keep its type.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
import os
from collections.abc import Iterable, Sequence

import ml_collections

from avatar_jax.errors import ConfigError

DEFAULT_CONFIG = "tiny"


def split_spec(spec: str) -> tuple[str, str | None]:
    """``"configs/x.py:arg"`` -> ``("configs/x.py", "arg")``; ``"x"`` -> ``("x", None)``."""
    head, sep, tail = spec.rpartition(":")
    if sep and head and "/" not in tail and (head.endswith(".py") or "/" not in head):
        return head, tail
    return spec, None


def _import_config_module(name: str):
    if name.endswith(".py") or os.sep in name or "/" in name:
        if not os.path.isfile(name):
            raise ConfigError(f"config file not found: {name!r}")
        mod_name = "_avatar_jax_config_" + os.path.splitext(os.path.basename(name))[0]
        spec = importlib.util.spec_from_file_location(mod_name, name)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as e:  # a broken config file: say which and why, in one line
            raise ConfigError(f"config file {name!r} failed to load: {type(e).__name__}: {e}") from e
        return module
    try:
        return importlib.import_module(f"avatar_jax.configs.{name}")
    except ModuleNotFoundError as e:
        raise ConfigError(
            f"unknown config {name!r}: expected a path like configs/tiny.py or one of {available_configs()}"
        ) from e


def available_configs() -> list[str]:
    """Names of the configs shipped in ``avatar_jax.configs``."""
    import avatar_jax.configs as pkg

    names = []
    for path in pkg.__path__:
        for f in sorted(os.listdir(path)):
            if f.endswith(".py") and not f.startswith("_"):
                names.append(f[:-3])
    return names


def load_config(spec: str | None = None, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """Load ``spec`` (path or shipped name, optional ``:arg``), apply ``key=value`` overrides, validate.

    Returns a locked ConfigDict: later code cannot add keys by mistake.
    """
    name, arg = split_spec(spec or DEFAULT_CONFIG)
    module = _import_config_module(name)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config {name!r} has no get_config(arg) function")
    try:
        config = module.get_config(arg)
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"config {name!r} get_config({arg!r}) failed: {type(e).__name__}: {e}") from e
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"config {name!r} get_config must return a ConfigDict, got {type(config).__name__}")
    config.lock()
    apply_overrides(config, overrides)
    validate(config)
    return config


def _all_keys(config: ml_collections.ConfigDict, prefix: str = "") -> Iterable[str]:
    for key, value in config.items():
        path = f"{prefix}{key}"
        yield path
        if isinstance(value, ml_collections.ConfigDict):
            yield from _all_keys(value, path + ".")


def _coerce(key: str, current, raw: str):
    """Parse ``raw`` as a value of the same type as ``current``; raise ConfigError otherwise."""
    if isinstance(current, str) or current is None:
        if current is None:
            try:
                return ast.literal_eval(raw)
            except (ValueError, SyntaxError):
                return raw
        return raw
    if isinstance(current, bool):
        lowered = raw.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ConfigError(f"config key {key!r} expects a bool (true/false), got {raw!r}")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        raise ConfigError(
            f"config key {key!r} expects {type(current).__name__}, got {raw!r} which is not a literal"
        ) from None
    if isinstance(current, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"config key {key!r} expects int, got {raw!r}")
    if isinstance(current, float):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"config key {key!r} expects float, got {raw!r}")
    if isinstance(current, tuple | list):
        if isinstance(value, tuple | list):
            return type(current)(value)
        raise ConfigError(f"config key {key!r} expects a {type(current).__name__}, got {raw!r}")
    raise ConfigError(f"config key {key!r} of type {type(current).__name__} cannot be overridden from a string")


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> None:
    """Apply ``["a.b=1", "c=x"]`` (the ``--config.`` prefix already stripped) in place."""
    known = set(_all_keys(config))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"config override {item!r} must look like key.sub=value")
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown config key {key!r}{hint}")
        *parents, leaf = key.split(".")
        node = config
        for p in parents:
            node = node[p]
        current = node[leaf]
        if isinstance(current, ml_collections.ConfigDict):
            raise ConfigError(f"config key {key!r} is a group; override one of its fields instead")
        value = _coerce(key, current, raw)
        try:
            with config.unlocked():
                node[leaf] = value
        except TypeError as e:
            raise ConfigError(f"config key {key!r}: {e}") from None


def validate(config: ml_collections.ConfigDict, num_devices: int | None = None) -> None:
    """Check cross-field rules that a type check cannot: mesh shape, batch split, sizes.

    ``num_devices`` defaults to ``jax.device_count()`` when the config has a mesh section.
    """
    if "mesh" in config:
        from avatar_jax.train import sharding

        if num_devices is None:
            import jax

            num_devices = jax.device_count()
        shape = sharding.resolve_mesh_shape(dict(config.mesh), num_devices)
        if "train" in config and "batch_size" in config.train:
            data_ways = shape["data"] * shape["fsdp"]
            if config.train.batch_size % data_ways:
                raise ConfigError(
                    f"train.batch_size={config.train.batch_size} must be divisible by the data-parallel "
                    f"size data*fsdp={data_ways} (mesh {shape})"
                )
    if "render" in config:
        for field in ("width", "height"):
            if config.render[field] <= 0:
                raise ConfigError(f"render.{field} must be positive, got {config.render[field]}")
        if config.render.backend not in ("auto", "pallas", "xla"):
            raise ConfigError(f"render.backend must be auto, pallas or xla, got {config.render.backend!r}")


def parse_cli_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split argv into (``--config.x=y`` overrides without prefix, remaining args).

    Accepts both ``--config.x=y`` and ``--config.x y``.
    """
    overrides, rest = [], []
    argv = list(argv)
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--config."):
            body = arg[len("--config.") :]
            if "=" not in body:
                if i + 1 >= len(argv):
                    raise ConfigError(f"config override {arg} is missing a value")
                body = f"{body}={argv[i + 1]}"
                i += 1
            overrides.append(body)
        else:
            rest.append(arg)
        i += 1
    return overrides, rest
