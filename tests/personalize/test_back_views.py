"""The back-view face check's control (personalize/back_views.py): a head of one flat colour, nothing else touched."""

import jax.numpy as jnp
import numpy as np
import pytest

from avatar_jax.body import parts
from avatar_jax.body.template import load_template
from avatar_jax.gaussians import init
from avatar_jax.gaussians.cloud import dc_from_rgb, rgb_from_dc
from avatar_jax.personalize import back_views


def test_flat_head_paints_the_whole_head_and_nothing_else():
    cloud = init.init_on_template(load_template(), 2000, seed=0)
    rgb = np.random.default_rng(0).uniform(0.1, 0.9, (cloud.num, 3)).astype(np.float32)
    cloud = cloud.replace(sh=cloud.sh.at[:, 0].set(dc_from_rgb(jnp.asarray(rgb))))
    head = np.isin(np.asarray(cloud.part), parts.FACE_PARTS)
    flat, colour = back_views.flat_head(cloud)
    out = np.asarray(rgb_from_dc(flat.sh[:, 0]))
    np.testing.assert_allclose(out[head], np.broadcast_to(colour, (head.sum(), 3)), atol=1e-6)
    np.testing.assert_allclose(out[~head], rgb[~head], atol=1e-6)
    assert np.all((colour > 0.1) & (colour < 0.9))  # the median of the head's own (back) colours
    _, given = back_views.flat_head(cloud, np.array([0.5, 0.4, 0.3], np.float32))
    np.testing.assert_allclose(given, [0.5, 0.4, 0.3])


@pytest.mark.parametrize("args", [["--flat", "0.5,0.5"], ["--flat", "2,0,0"], ["--azimuths", "front"]])
def test_bad_arguments_are_one_clear_error(args, capsys):
    with pytest.raises(SystemExit) as e:
        back_views.main(["/nonexistent", *args])
    assert e.value.code == 2
    assert "must be" in capsys.readouterr().err
