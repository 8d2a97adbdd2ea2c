"""``avatar-jax bench inference`` runs end to end in quick mode and accounts for its time by stage."""

import json
import os

import pytest

from avatar_jax import cli


@pytest.mark.slow  # exports and compiles a bundle (about 20 s on an idle 2-core CPU)
def test_bench_inference_quick(tmp_path):
    assert cli.main(["bench", "inference", "--config.bench.quick=true", "--config.model.d_model=32",
                     "--config.model.num_particles=16", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "bench_inference.json").read_text())
    (row,) = res["rows"]
    assert (row["width"], row["height"], row["frames"]) == (64, 64, 25)
    for clock in ("", "cpu_"):  # the profiled run's stages are timed inside its total
        stages = sum(row[f"{s}_{clock}ms_per_frame"] for s in ("encoder", "model", "render")) * row["frames"]
        assert 0 < stages <= 1e3 * row["profiled_seconds"] * (1 if clock == "" else 2 * os.cpu_count())
    assert row["frames_per_second"] == row["frames"] / row["seconds"]
    assert row["cpu_ms_per_frame"] > 0
