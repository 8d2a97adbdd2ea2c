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
