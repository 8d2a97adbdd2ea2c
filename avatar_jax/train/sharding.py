"""The device mesh and the one rules table that maps logical parameter axes to mesh axes.

Mesh axes are ``("data", "fsdp", "model")`` (DESIGN.md). Modules name their parameter axes
logically (``"embed"``, ``"mlp"``, ``"heads"``, ``"gaussians"``...) and never mention the mesh;
only :data:`LOGICAL_AXIS_RULES` does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from avatar_jax.errors import ConfigError

MESH_AXES = ("data", "fsdp", "model")

# logical axis -> mesh axis (or None: replicated). One table for the whole project.
LOGICAL_AXIS_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("frames", None),
    ("embed", "fsdp"),
    ("mlp", "model"),
    ("heads", "model"),
    ("kv", None),
    ("particles", None),
    ("gaussians", "model"),
    ("vocab", "model"),
    ("conv_in", None),
    ("conv_out", "model"),
)


def resolve_mesh_shape(shape: Mapping[str, int], num_devices: int) -> dict[str, int]:
    """Fill one ``-1`` entry so that the product equals ``num_devices``; check the result.

    Raises ConfigError for unknown axes, several ``-1``, non-positive sizes, or a product that does
    not match the number of devices.
    """
    unknown = set(shape) - set(MESH_AXES)
    if unknown:
        raise ConfigError(f"unknown mesh axes {sorted(unknown)}; expected a subset of {list(MESH_AXES)}")
    sizes = {axis: int(shape.get(axis, 1)) for axis in MESH_AXES}
    free = [a for a, s in sizes.items() if s == -1]
    if len(free) > 1:
        raise ConfigError(f"mesh shape {sizes} has more than one -1 entry; at most one axis can be inferred")
    bad = [a for a, s in sizes.items() if s == 0 or s < -1]
    if bad:
        raise ConfigError(f"mesh axis sizes must be positive (or -1 for one inferred axis), got {sizes}")
    fixed = math.prod(s for s in sizes.values() if s != -1)
    if free:
        if num_devices % fixed:
            raise ConfigError(
                f"impossible mesh shape {sizes}: the fixed axes use {fixed} devices, which does not divide "
                f"the {num_devices} available devices"
            )
        sizes[free[0]] = num_devices // fixed
    elif fixed != num_devices:
        raise ConfigError(
            f"impossible mesh shape {sizes}: it needs {fixed} devices but {num_devices} are available"
        )
    return sizes


def make_mesh(shape: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ``("data","fsdp","model")`` mesh over ``devices`` (default: all), ``-1`` filled in."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = resolve_mesh_shape(shape, len(devices))
    grid = np.asarray(devices).reshape(tuple(sizes[a] for a in MESH_AXES))
    return Mesh(grid, MESH_AXES)


def logical_to_mesh_spec(logical_axes: Sequence[str | None],
                         rules: Sequence[tuple[str, str | tuple[str, ...] | None]] = LOGICAL_AXIS_RULES
                         ) -> PartitionSpec:
    """Translate logical axis names to a PartitionSpec; each mesh axis is used at most once."""
    table = dict(rules)
    used: set[str] = set()
    out = []
    for name in logical_axes:
        if name is None:
            out.append(None)
            continue
        if name not in table:
            raise KeyError(f"logical axis {name!r} has no sharding rule; add it to LOGICAL_AXIS_RULES")
        target = table[name]
        axes = (target,) if isinstance(target, str) else tuple(target or ())
        axes = tuple(a for a in axes if a not in used)
        used.update(axes)
        out.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    return PartitionSpec(*out)


def named_sharding(mesh: Mesh, logical_axes: Sequence[str | None]) -> NamedSharding:
    """NamedSharding on ``mesh`` for an array whose dims carry ``logical_axes``."""
    return NamedSharding(mesh, logical_to_mesh_spec(logical_axes))


def fit_spec(mesh: Mesh, spec: PartitionSpec, shape: Sequence[int]) -> PartitionSpec:
    """``spec`` without the mesh axes that do not divide their dimension of ``shape`` (those dims are
    replicated over that axis instead), so one rules table serves every mesh shape."""
    out = []
    for dim, entry in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec)), strict=False):
        axes = () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
        kept, ways = [], 1
        for a in axes:
            if dim % (ways * mesh.shape[a]) == 0:
                kept.append(a)
                ways *= mesh.shape[a]
        out.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
    return PartitionSpec(*out)


def state_shardings(mesh: Mesh, state):
    """NamedShardings for an NNX state whose Variables carry logical ``out_sharding`` names.

    Variables without annotations are replicated; a dimension a mesh axis does not divide is
    replicated over that axis (:func:`fit_spec`).
    """
    from flax import nnx

    def to_sharding(variable):
        names = variable.get_metadata().get("out_sharding") if hasattr(variable, "get_metadata") else None
        spec = logical_to_mesh_spec(tuple(names)) if names else PartitionSpec()
        shape = getattr(variable.get_value() if hasattr(variable, "get_value") else variable.value, "shape", None)
        if shape is not None:
            spec = fit_spec(mesh, spec, shape)
        return variable.replace(NamedSharding(mesh, spec))

    return jax.tree.map(to_sharding, state, is_leaf=lambda x: isinstance(x, nnx.Variable))
