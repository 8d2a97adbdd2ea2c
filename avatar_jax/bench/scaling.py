"""Will the distillation step fit, and how does it scale? AOT compiles on this CPU, nothing materialised.

For simulated CPU meshes (1..8 devices, ``XLA_FLAGS=--xla_force_host_platform_device_count=N``) and, through
``.venv-tpu`` (libtpu: ``jax.experimental.topologies.get_topology_desc``), TPU topologies, each case runs in
its own subprocess that compiles the teacher side of the VSD step (:func:`avatar_jax.train.vsd.
lower_frame_gradient`: VAE encode, noising, guided eps-hat with three CFG branches, VJP to the frames) with
teacher parameters from ``nnx.eval_shape`` in bf16, FSDP x tensor-parallel. Reported per device: argument,
temporary and output bytes (compiled memory analysis), FLOPs (cost analysis), collective bytes (result sizes
of all-gather / all-reduce / reduce-scatter / all-to-all / collective-permute in the compiled HLO text; ops in
loop bodies count once), whether it fits HBM, and per teacher the smallest slice that fits.

Every finished compile is appended to ``OUT/bench_scaling_rows.jsonl`` with its settings; a rerun with the same
settings reuses those rows (a 14B compile takes tens of minutes on a small CPU), so the report can be built up
over several runs. ``data_axis_flops`` lists, per teacher and chip, rows that differ only in the ``data`` axis
with ``flops x N`` relative to the smallest such slice (1.0 = per-device FLOPs fall exactly as 1/N).

The student (its params, Adam moments and render) is omitted: a few MB next to the teacher. The global batch
is fixed (``bench.scaling_batch`` clips of ``bench.scaling_frames`` frames at ``bench.scaling_size``^2), so
per-device FLOPs should fall as ``1/(data x fsdp x model)``. Mesh for ``N`` chips: ``model = 4`` (divides the
1.3B's 12 and the 14B's 40 heads), ``fsdp = min(N/4, 16)``, ``data`` the rest.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

HBM_GIB = {"TPU v5 lite": 16.0, "TPU v5": 95.0, "TPU v5p": 95.0}
CPU_DEVICES = (1, 2, 4, 8)
DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2, "f32": 4, "s32": 4, "u32": 4,
               "f64": 8, "s64": 8, "u64": 8}
COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")
_OP = re.compile(r"=\s*(.*?)\s(" + "|".join(COLLECTIVES) + r")(-start)?\(")
_SHAPE = re.compile(r"\b(" + "|".join(DTYPE_BYTES) + r")\[([\d,]*)\]")


def collective_bytes(hlo_text: str) -> dict[str, int]:
    """Bytes produced per collective kind in compiled HLO text (async ``-start`` counted, ``-done`` not)."""
    out = dict.fromkeys(COLLECTIVES, 0)
    for line in hlo_text.splitlines():
        m = _OP.search(line)
        if not m:
            continue
        total = 0
        for dtype, dims in _SHAPE.findall(m.group(1)):
            n = 1
            for d in filter(None, dims.split(",")):
                n *= int(d)
            total += n * DTYPE_BYTES[dtype]
        if m.group(3):  # async start: the result tuple holds the operand and the output; count the output
            total //= 2
        out[m.group(2)] += total
    return out


# "Used 43.7G of 15.75G hbm" or "... HLO temporaries (101.56G) exceeds available HBM (15.75G)"
_HBM_USED = re.compile(r"(?:Used |\()([\d.]+)([KMGT])?\)? (?:of [\d.]+[KMGT]? hbm|exceeds available HBM)")
_UNIT = {None: 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}


def _argument_bytes(params, shardings) -> int:
    """Per-device bytes of the teacher's parameters from their shardings (for programs the compiler refused)."""
    import math

    import jax

    total = 0
    for p, sh in zip(jax.tree.leaves(params), jax.tree.leaves(shardings), strict=True):
        total += math.prod(sh.shard_shape(p.shape)) * jax.numpy.dtype(p.dtype).itemsize
    return int(total)


def mesh_for(n: int) -> dict[str, int]:
    if n < 4:
        return {"data": 1, "fsdp": n, "model": 1}
    fsdp = min(n // 4, 16)
    return {"data": n // (4 * fsdp), "fsdp": fsdp, "model": 4}


def _abstract_teacher(name: str, config):
    """``(teacher, vae)`` abstract modules: Wan2.1 ``1.3B``/``14B`` (bf16, Wan VAE) or the ``tiny`` teacher."""
    from flax import nnx

    from avatar_jax.teacher import tiny
    from avatar_jax.teacher.audio_adapter import AudioAdapter
    from avatar_jax.teacher.configs import dit_config
    from avatar_jax.teacher.dit import WanDiT
    from avatar_jax.teacher.schedules import FlowMatching
    from avatar_jax.teacher.teacher import VideoTeacher
    from avatar_jax.teacher.vae import WanVAE, WanVAESpec

    if name == "tiny":
        return nnx.eval_shape(lambda: tiny.build(config.teacher))
    spec = dit_config(name, dtype="bfloat16", param_dtype="bfloat16", remat=str(config.bench.scaling_remat))

    def build():
        adapter = AudioAdapter(8, spec.dim, tuple(range(spec.num_layers)), rngs=nnx.Rngs(1))
        return (VideoTeacher(WanDiT(spec, rngs=nnx.Rngs(0)), FlowMatching(), adapter),
                WanVAE(WanVAESpec(dtype="bfloat16"), rngs=nnx.Rngs(2)))

    return nnx.eval_shape(build)


def compile_case(case: dict, config) -> dict:
    """Compile one case in this process: ``case = {teacher, devices, topology|None}`` -> numbers."""
    import jax

    from avatar_jax.train import sharding, vsd

    if case.get("topology"):
        from jax.experimental import topologies

        devices = topologies.get_topology_desc(case["topology"], platform="tpu").devices
    else:
        devices = jax.devices()[: case["devices"]]
    shape = dict(case["axes"]) if case.get("axes") else mesh_for(len(devices))  # axes: a mesh other than mesh_for's
    mesh = sharding.make_mesh(shape, devices)
    teacher, vae = _abstract_teacher(case["teacher"], config)
    text_shape = (1, 2, 8) if case["teacher"] == "tiny" else (1, 512, 4096)
    text = jax.ShapeDtypeStruct(text_shape, jax.numpy.float32)
    distiller, params = vsd.split_teacher(teacher, vae, text, text, vsd.VSDSettings(n_mels=8))
    bc = config.bench
    size = 32 if case["teacher"] == "tiny" else int(bc.scaling_size)
    frames = (int(bc.scaling_batch), int(bc.scaling_frames), size, size, 3)
    shardings = vsd.teacher_shardings(mesh, params)
    lowered = vsd.lower_frame_gradient(distiller, params, shardings, mesh, frames, frames[1] * 640)
    kind = devices[0].device_kind
    tic = time.perf_counter()
    try:
        compiled = lowered.compile()
    except Exception as e:  # the TPU compiler refuses a program that overflows HBM: that is "does not fit"
        used = _HBM_USED.search(str(e))
        if used is None:
            raise
        used_bytes = int(float(used.group(1)) * _UNIT[used.group(2)])
        return dict(case, device_kind=kind, devices=len(devices), mesh=shape, frames=list(frames),
                    argument_bytes=_argument_bytes(params, shardings), total_bytes=used_bytes,
                    hbm_gib=HBM_GIB.get(kind), fits=False, compile_error=str(e).strip().splitlines()[0][:300],
                    compile_s=time.perf_counter() - tic)
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis() or {}
    cost = cost[0] if isinstance(cost, list) else cost
    total = mem.argument_size_in_bytes + mem.temp_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
    hbm = HBM_GIB.get(kind)
    return dict(case, device_kind=kind, devices=len(devices), mesh=shape, frames=list(frames),
                argument_bytes=int(mem.argument_size_in_bytes), temp_bytes=int(mem.temp_size_in_bytes),
                output_bytes=int(mem.output_size_in_bytes), total_bytes=int(total),
                flops=float(cost.get("flops", 0.0)), collective_bytes=collective_bytes(compiled.as_text()),
                hbm_gib=hbm, fits=None if hbm is None else bool(total <= hbm * 2 ** 30),
                compile_s=time.perf_counter() - tic)


def _subprocess(case: dict, overrides: list[str], timeout: float) -> dict:
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    python = sys.executable
    if case.get("topology"):
        python = os.path.join(repo, ".venv-tpu", "bin", "python")
        if not os.path.exists(python):
            return dict(case, error="no .venv-tpu (make tpu-venv): TPU topologies need libtpu")
        env["TPU_SKIP_MDS_QUERY"] = "1"
        env["ALLOW_MULTIPLE_LIBTPU_LOAD"] = "1"  # compile-only: other libtpu users on this host do not matter
        # flax/optax/... are pure Python: borrow them from this interpreter's site-packages (same jax)
        site = [p for p in sys.path if p.endswith("site-packages")]
        env["PYTHONPATH"] = os.pathsep.join([repo, *site])
    else:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={case['devices']}"
    cmd = [python, "-m", "avatar_jax.bench.scaling", json.dumps(case), *overrides]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=repo)
    except subprocess.TimeoutExpired:
        return dict(case, error=f"compile took more than {timeout:.0f} s")
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if re.match(r"^[\w.]*(Error|Exception):", ln)]
        return dict(case, error=(lines or proc.stderr.strip().splitlines() or ["failed"])[-1][:500])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cases(config) -> list[dict]:
    if config.bench.quick:
        return [{"teacher": "tiny", "devices": n, "topology": None} for n in (1, 8)] + [
            {"teacher": "tiny", "devices": 4, "topology": "v5e:2x2"}]
    out = []
    for teacher in config.bench.scaling_teachers:
        if teacher == "tiny":
            out += [{"teacher": "tiny", "devices": n, "topology": None} for n in CPU_DEVICES]
            # the data axis alone (fsdp = model = 1): per-device FLOPs against data parallelism
            out += [{"teacher": "tiny", "devices": n, "topology": None, "axes": {"data": n, "fsdp": 1, "model": 1}}
                    for n in CPU_DEVICES[1:]]
        else:
            out += [{"teacher": teacher, "devices": None, "topology": t} for t in config.bench.scaling_topologies]
    return out


def smallest_fitting(rows: list[dict]) -> dict[str, str | None]:
    out = {}
    for teacher in sorted({r["teacher"] for r in rows if r.get("topology")}):
        ok = [r for r in rows if r["teacher"] == teacher and r.get("fits")]
        best = min(ok, key=lambda r: r["devices"], default=None)
        out[teacher] = None if best is None else best["topology"]
    return out


def data_axis_flops(rows: list[dict]) -> list[dict]:
    """Per teacher and chip kind, compiled rows with the same ``fsdp x model`` and different ``data``:
    ``flops_x_chips`` relative to the smallest slice of the group (1.0 = per-device FLOPs exactly 1/N)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if "flops" not in r or "mesh" not in r:
            continue
        chip = r["topology"].split(":")[0] if r.get("topology") else "cpu"
        key = (r["teacher"], chip, r["mesh"]["fsdp"], r["mesh"]["model"])
        groups.setdefault(key, []).append(r)
    out = []
    for (teacher, chip, fsdp, model), group in sorted(groups.items()):
        group = sorted(group, key=lambda r: r["devices"])
        if len({r["mesh"]["data"] for r in group}) < 2:
            continue
        base = group[0]
        for r in group:
            out.append(dict(teacher=teacher, chip=chip, fsdp=fsdp, model=model, data=r["mesh"]["data"],
                            chips=r["devices"], flops=r["flops"],
                            flops_x_chips=r["flops"] * r["devices"] / (base["flops"] * base["devices"])))
    return out


def plot(rows: list[dict], path: str) -> None:
    """Left: per-chip memory (total needed, compiler refusals included; parameters + inputs) against HBM.
    Right: per-chip FLOPs of the compiled rows with the ideal ``1/N`` from each series' smallest slice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_mem, ax_flops) = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = {("1.3B", "v5e"): "tab:blue", ("14B", "v5e"): "tab:red", ("1.3B", "v5p"): "tab:cyan",
               ("14B", "v5p"): "tab:orange"}
    for (teacher, chip), colour in colours.items():
        pts = sorted((r["devices"], r) for r in rows if r["teacher"] == teacher and "error" not in r
                     and (r.get("topology") or "").startswith(chip))
        if not pts:
            continue
        n = [p[0] for p in pts]
        label = f"{teacher} on {chip}"
        ax_mem.plot(n, [p[1]["total_bytes"] / 2 ** 30 for p in pts], "o-", color=colour, label=f"{label}: total")
        ax_mem.plot(n, [p[1]["argument_bytes"] / 2 ** 30 for p in pts], "x--", color=colour,
                    label=f"{label}: params + inputs")
        refused = [p for p in pts if "compile_error" in p[1]]
        if refused:
            ax_mem.plot([p[0] for p in refused], [p[1]["total_bytes"] / 2 ** 30 for p in refused], "o",
                        mfc="none", mec="k", ms=9)
        done = [p for p in pts if "flops" in p[1]]
        if done:
            ax_flops.plot([p[0] for p in done], [p[1]["flops"] for p in done], "o-", color=colour, label=label)
            n0, f0 = done[0][0], done[0][1]["flops"]
            ax_flops.plot([p[0] for p in done], [f0 * n0 / p[0] for p in done], ":", color=colour)
    for hbm, name in ((16, "v5e HBM 16 GiB"), (95, "v5p HBM 95 GiB")):
        ax_mem.axhline(hbm, color="grey", lw=0.8, ls=":")
        ax_mem.text(0.02, hbm * 1.05, name, color="grey", fontsize=7, va="bottom",
                    transform=ax_mem.get_yaxis_transform())
    chips = sorted({r["devices"] for r in rows if r.get("topology") and "error" not in r})
    for ax in (ax_mem, ax_flops):
        ax.set_xscale("log", base=2)
        if chips:
            ax.set_xticks(chips, [str(c) for c in chips])
            ax.set_xlim(chips[0] / 1.5, chips[-1] * 1.5)
        ax.set_yscale("log")
        ax.set_xlabel("chips")
        ax.legend(fontsize=6)
    ax_mem.set_ylabel("GiB per chip (ringed: refused by the compiler)")
    ax_flops.set_ylabel("FLOPs per chip (dotted: ideal 1/N)")
    fig.suptitle("VSD step, teacher side (bf16 Wan2.1 + VAE, 64 clips x 17 frames at 256^2), AOT-compiled for TPU",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


ROWS_FILE = "bench_scaling_rows.jsonl"


def settings_of(config) -> dict:
    """What a compile depends on besides its case (the row cache's key)."""
    bc = config.bench
    return {"batch": int(bc.scaling_batch), "frames": int(bc.scaling_frames), "size": int(bc.scaling_size),
            "remat": str(bc.scaling_remat)}


def _key(case: dict, settings: dict) -> str:
    return json.dumps({"teacher": case["teacher"], "devices": case.get("devices") if not case.get("topology") else None,
                       "topology": case.get("topology"), "axes": case.get("axes"), **settings}, sort_keys=True)


def load_rows(path: str) -> dict[str, dict]:
    """The row cache: key -> row (later lines win; unreadable lines are skipped)."""
    out = {}
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            try:
                entry = json.loads(line)
                out[_key(entry["row"], entry["settings"])] = entry["row"]
            except (ValueError, KeyError, TypeError):
                continue
    return out


def run(config, out_dir: str) -> dict:
    overrides = [f"bench.quick={bool(config.bench.quick)}"]
    for key in ("scaling_batch", "scaling_frames", "scaling_size", "scaling_remat", "scaling_timeout"):
        overrides.append(f"bench.{key}={config.bench[key]}")
    rows = []
    settings = settings_of(config)
    cache_path = os.path.join(out_dir, ROWS_FILE)
    cached = {} if config.bench.quick else load_rows(cache_path)
    print(f"{'teacher':>7} {'target':>10} {'chips':>5} {'mesh':>12} {'args GiB':>9} {'temp GiB':>9} {'TFLOP':>8} "
          f"{'coll GiB':>9} fits", flush=True)
    for case in cases(config):
        row = cached.get(_key(case, settings))
        if row is None:
            row = _subprocess(case, overrides, float(config.bench.scaling_timeout))
            if "error" not in row and not config.bench.quick:
                with open(cache_path, "a") as f:
                    f.write(json.dumps({"settings": settings, "row": row}) + "\n")
        rows.append(row)
        target = case["topology"] or f"cpu:{case['devices']}"
        if "error" in row:
            print(f"{case['teacher']:>7} {target:>10}  error: {row['error']}", flush=True)
            continue
        mesh = "x".join(str(row["mesh"][a]) for a in ("data", "fsdp", "model"))
        if "compile_error" in row:  # refused by the TPU compiler: over HBM
            need = row["total_bytes"] / 2 ** 30
            print(f"{row['teacher']:>7} {target:>10} {row['devices']:>5} {mesh:>12} "
                  f"{row['argument_bytes'] / 2**30:9.3f} needs {need:.1f} GiB of {row['hbm_gib']} GiB: False",
                  flush=True)
            continue
        print(f"{row['teacher']:>7} {target:>10} {row['devices']:>5} {mesh:>12} {row['argument_bytes'] / 2**30:9.3f} "
              f"{row['temp_bytes'] / 2**30:9.3f} {row['flops'] / 1e12:8.3f} "
              f"{sum(row['collective_bytes'].values()) / 2**30:9.3f} {row['fits']}", flush=True)
    result = {"rows": rows, "smallest_fitting_slice": smallest_fitting(rows), "data_axis_flops": data_axis_flops(rows),
              "settings": settings}
    for r in result["data_axis_flops"]:
        print(f"{r['teacher']} on {r['chip']}, fsdp {r['fsdp']} x model {r['model']}: data {r['data']} "
              f"({r['chips']} chips) flops x chips = {r['flops_x_chips']:.3f} of the smallest slice's", flush=True)
    if any(r.get("topology") and "error" not in r for r in rows):
        path = os.path.join(out_dir, "bench_scaling.png")
        plot(rows, path)
        result["plot"] = path
    return result


def _main(argv: list[str]) -> None:
    from avatar_jax.config import load_config

    case = json.loads(argv[0])
    config = load_config("tiny", argv[1:])
    print(json.dumps(compile_case(case, config)))


if __name__ == "__main__":
    _main(sys.argv[1:])
