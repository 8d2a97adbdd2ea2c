import pytest

from avatar_jax.config import apply_overrides, load_config, parse_cli_overrides, split_spec, validate
from avatar_jax.errors import ConfigError
from avatar_jax.train import sharding


def test_load_by_path_and_by_name_give_the_same_config():
    a = load_config("configs/tiny.py")
    b = load_config("tiny")
    assert a.to_dict() == b.to_dict()
    assert a.render.width == 128


def test_config_arg_is_passed_to_get_config():
    c = load_config("configs/base.py:2")
    assert c.mesh.model == 2
    assert split_spec("configs/base.py:2") == ("configs/base.py", "2")
    assert split_spec("tiny") == ("tiny", None)


def test_overrides_change_values_and_keep_types():
    c = load_config("tiny", ["train.steps=7", "train.learning_rate=1", "render.backend=xla",
                             "render.background=(0, 0, 0)", "mesh.data=8"])
    assert c.train.steps == 7 and isinstance(c.train.steps, int)
    assert c.train.learning_rate == 1.0 and isinstance(c.train.learning_rate, float)
    assert c.render.backend == "xla"
    assert tuple(c.render.background) == (0, 0, 0)


def test_unknown_key_is_rejected_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"unknown config key 'train.stepz'; did you mean 'train.steps'"):
        load_config("tiny", ["train.stepz=3"])


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.steps=abc", "expects int"),
        ("train.steps=1.5", "expects int"),
        ("train.learning_rate=fast", "expects float"),
        ("demo.train_steps=true", "expects int"),
        ("render", "must look like key.sub=value"),
        ("render=3", "is a group"),
    ],
)
def test_wrong_types_are_rejected(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", [override])


def test_impossible_mesh_shapes_are_rejected():
    with pytest.raises(ConfigError, match="impossible mesh shape"):
        load_config("tiny", ["mesh.data=3"])  # 3 x 1 x 1 != 8 devices
    with pytest.raises(ConfigError, match="does not divide"):
        load_config("tiny", ["mesh.model=3"])  # -1 cannot be filled
    with pytest.raises(ConfigError, match="more than one -1"):
        load_config("tiny", ["mesh.model=-1"])
    with pytest.raises(ConfigError, match="divisible by the data-parallel"):
        load_config("tiny", ["train.batch_size=4"])  # 8-way data parallel


def test_mesh_resolution_and_logical_rules():
    assert sharding.resolve_mesh_shape({"data": -1, "fsdp": 2, "model": 2}, 8) == {"data": 2, "fsdp": 2, "model": 2}
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "model": -1})
    assert mesh.shape == {"data": 2, "fsdp": 2, "model": 2}
    spec = sharding.logical_to_mesh_spec(("batch", "embed", "mlp"))
    assert tuple(spec) == (("data", "fsdp"), None, "model")  # fsdp already used by batch
    with pytest.raises(KeyError, match="no sharding rule"):
        sharding.logical_to_mesh_spec(("nonsense",))


def test_validate_checks_render_fields():
    c = load_config("tiny")
    with c.unlocked():
        c.render.backend = "cuda"
    with pytest.raises(ConfigError, match="render.backend"):
        validate(c, num_devices=8)


def test_missing_and_broken_config_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(str(tmp_path / "nope.py"))
    bad = tmp_path / "bad.py"
    bad.write_text("def get_config(arg):\n    raise RuntimeError('boom')\n")
    with pytest.raises(ConfigError, match="boom"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="unknown config 'nosuch'"):
        load_config("nosuch")


def test_cli_override_parsing():
    overrides, rest = parse_cli_overrides(["demo", "--config", "tiny", "--config.train.steps=3",
                                           "--config.render.width", "64", "--out", "x"])
    assert overrides == ["train.steps=3", "render.width=64"]
    assert rest == ["demo", "--config", "tiny", "--out", "x"]
    c = load_config("tiny")
    apply_overrides(c, overrides)
    assert c.render.width == 64


def test_every_reconstruct_setting_is_a_config_key_with_the_librarys_default():
    from avatar_jax.personalize import reconstruct

    c = load_config("tiny", ["reconstruct.hair_drop=0.05"])  # overridable from the command line
    assert c.reconstruct.hair_drop == 0.05
    c = load_config("tiny")
    for key, value in reconstruct.DEFAULTS.items():
        assert c.reconstruct[key] == value, key
