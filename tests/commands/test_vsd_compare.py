"""``avatar-jax vsd-compare``: the command's config is tiny:face + COMPARE_DEFAULTS under the user's overrides,
the teacher comes from --teacher, and bad lists are one-line usage errors before any work."""

from avatar_jax import cli
from avatar_jax.train import vsd_compare as vc


def _capture(monkeypatch):
    seen = {}
    monkeypatch.setattr(vc, "comparison_data", lambda teacher, data, out: seen.setdefault("data", (teacher, data, out)))
    monkeypatch.setattr(vc, "validation_data", lambda teacher, data, out: f"{out}")
    monkeypatch.setattr(vc, "compare", lambda config, out, **kw: seen.update(config=config, kw=kw) or {"summary": {}})
    return seen


def test_defaults_go_under_the_users_overrides(monkeypatch, tmp_path):
    seen = _capture(monkeypatch)
    out = str(tmp_path / "cmp")
    argv = ["vsd-compare", "--teacher", "T", "--data", "D", "--out", out, "--seeds", "3,4", "--weights", "10,30",
            "--no-progress", "--config.loss.vsd=7.5", "--config.train.steps=5", "--config.mesh.data=1",
            "--config.mesh.model=-1"]  # one data shard: the 8 simulated devices need no batch of 8
    assert cli.main(argv) == 0
    config, kw = seen["config"], seen["kw"]
    assert config.vsd.teacher == "T" and seen["data"][:2] == ("T", "D")
    assert config.loss.vsd == 7.5 and config.train.steps == 5  # the user's overrides win
    assert config.loss.image == 0 and config.vsd.variational and config.train.seq_len == 9  # COMPARE_DEFAULTS
    assert config.loss.kpt_lips == 10.0  # the tiny:face student (lips weighted up), not plain tiny
    assert kw["seeds"] == [3, 4] and kw["weights"] == [10.0, 30.0] and kw["progress"] is False
    assert kw["val_root"].endswith("data_val")


def test_bad_seed_list_is_a_one_line_usage_error(monkeypatch, tmp_path, capsys):
    seen = _capture(monkeypatch)
    argv = ["vsd-compare", "--teacher", "T", "--data", "D", "--out", str(tmp_path / "o"), "--seeds", "0,0",
            "--config.mesh.data=1", "--config.mesh.model=-1"]
    assert cli.main(argv) == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--seeds must list one or more distinct values" in err[0]
    assert "config" not in seen  # nothing ran
