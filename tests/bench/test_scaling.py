"""`avatar-jax bench scaling`: collective bytes parsed from HLO text, the mesh per slice, and one real AOT
compile of the distillation step's teacher side on 8 simulated CPU devices and on a TPU v5e 2x2 topology."""

import json

import pytest

from avatar_jax.bench import scaling
from avatar_jax.config import load_config

HLO = """
  %all-gather.1 = bf16[4,1536]{1,0} all-gather(bf16[1,1536]{1,0} %p), channel_id=1, replica_groups={{0,1,2,3}}
  %ar = (f32[8]{0}, f32[2,2]{1,0}) all-reduce(f32[8]{0} %a, f32[2,2]{1,0} %b), to_apply=%add
  %ags = (bf16[1,16]{1,0}, bf16[4,16]{1,0}) all-gather-start(bf16[1,16]{1,0} %q), dimensions={0}
  %agd = bf16[4,16]{1,0} all-gather-done((bf16[1,16]{1,0}, bf16[4,16]{1,0}) %ags)
  %rs = f32[3]{0} reduce-scatter(f32[12]{0} %c), dimensions={0}
  %add = f32[8]{0} add(f32[8]{0} %x, f32[8]{0} %y)
"""


def test_collective_bytes_from_hlo_text():
    got = scaling.collective_bytes(HLO)
    assert got["all-gather"] == 4 * 1536 * 2 + (16 + 64) * 2 // 2
    assert got["all-reduce"] == (8 + 4) * 4
    assert got["reduce-scatter"] == 12
    assert got["all-to-all"] == got["collective-permute"] == 0


def test_mesh_per_slice_keeps_every_chip():
    for n in (1, 2, 4, 8, 16, 64, 256):
        m = scaling.mesh_for(n)
        assert m["data"] * m["fsdp"] * m["model"] == n
    assert scaling.mesh_for(256) == {"data": 4, "fsdp": 16, "model": 4}


@pytest.mark.parametrize("case", [{"teacher": "tiny", "devices": 8, "topology": None},
                                  {"teacher": "tiny", "devices": None, "topology": "v5e:2x2"}])
def test_compile_case_in_a_subprocess(case):
    config = load_config("tiny", ["bench.scaling_batch=8"])
    row = scaling._subprocess(case, ["bench.scaling_batch=8"], 900)
    assert "error" not in row, row
    json.dumps(row)
    assert row["frames"] == [8, int(config.bench.scaling_frames), 32, 32, 3]
    assert row["argument_bytes"] > 0 and row["temp_bytes"] > 0 and row["flops"] > 0
    if case["topology"]:
        assert (row["device_kind"], row["devices"], row["hbm_gib"], row["fits"]) == ("TPU v5 lite", 4, 16.0, True)
        assert row["mesh"] == {"data": 1, "fsdp": 1, "model": 4}
    else:
        assert row["devices"] == 8 and row["fits"] is None and row["mesh"] == {"data": 1, "fsdp": 2, "model": 4}
    assert sum(row["collective_bytes"].values()) > 0  # the teacher's shards are gathered / reduced


def _row(teacher, topology, devices, mesh, flops=None, total=10.0):
    row = {"teacher": teacher, "topology": topology, "devices": devices, "mesh": dict(zip(("data", "fsdp", "model"),
                                                                                          mesh, strict=True)),
           "argument_bytes": 2 ** 30, "total_bytes": int(total * 2 ** 30), "hbm_gib": 16.0}
    if flops is None:
        row.update(fits=False, compile_error="RESOURCE_EXHAUSTED: ... exceeds available HBM")
    else:
        row.update(flops=flops, temp_bytes=2 ** 31, fits=total <= 16.0)
    return row


def test_data_axis_flops_compare_slices_that_differ_only_in_data(tmp_path):
    rows = [_row("1.3B", "v5e:8x8", 64, (1, 16, 4), flops=4e12),
            _row("1.3B", "v5e:16x16", 256, (4, 16, 4), flops=1.1e12),
            _row("1.3B", "v5e:4x4", 16, (1, 4, 4), total=20.0),  # refused: no FLOPs, not in the comparison
            _row("14B", "v5e:8x8", 64, (1, 16, 4), flops=9e12)]  # alone in its group
    got = scaling.data_axis_flops(rows)
    assert [(r["teacher"], r["data"], r["chips"]) for r in got] == [("1.3B", 1, 64), ("1.3B", 4, 256)]
    assert got[0]["flops_x_chips"] == 1.0 and abs(got[1]["flops_x_chips"] - 1.1) < 1e-12
    assert scaling.smallest_fitting(rows) == {"1.3B": "v5e:8x8", "14B": "v5e:8x8"}
    scaling.plot(rows, str(tmp_path / "p.png"))
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_row_cache_is_keyed_by_case_and_settings(tmp_path):
    config = load_config("tiny", [])
    settings = scaling.settings_of(config)
    row = _row("14B", "v5e:16x16", 256, (4, 16, 4), flops=1e12)
    path = tmp_path / scaling.ROWS_FILE
    path.write_text(json.dumps({"settings": settings, "row": row}) + "\nnot json\n")
    cached = scaling.load_rows(str(path))
    case = {"teacher": "14B", "devices": None, "topology": "v5e:16x16"}
    assert cached[scaling._key(case, settings)] == row
    assert scaling._key(case, {**settings, "batch": 32}) not in cached  # other settings: compiled again
    assert scaling._key({**case, "teacher": "1.3B"}, settings) not in cached
    assert scaling._key({**case, "axes": {"data": 256, "fsdp": 1, "model": 1}}, settings) not in cached


def test_cpu_data_axis_sweep_is_grouped_with_the_one_device_row():
    rows = [dict(_row("tiny", None, n, (d, f, m), flops=8.0 / n), topology=None)
            for n, (d, f, m) in ((1, (1, 1, 1)), (2, (1, 2, 1)), (2, (2, 1, 1)), (8, (8, 1, 1)))]
    got = scaling.data_axis_flops(rows)
    assert [(r["chip"], r["data"], r["flops_x_chips"]) for r in got] == [("cpu", 1, 1.0), ("cpu", 2, 1.0),
                                                                          ("cpu", 8, 1.0)]
    config = load_config("tiny", [])
    sweep = [c for c in scaling.cases(config) if c.get("axes")]
    assert [c["axes"]["data"] * c["axes"]["fsdp"] * c["axes"]["model"] for c in sweep] == [2, 4, 8]
