"""CPU default: small enough for a 2-core laptop, used by `make demo` and the tests.

Usage: --config configs/tiny.py   (or --config tiny)
       --config tiny:face         the image-supervised training recipe for face-framed synthetic clips of one
                                  avatar (README "Training"; tests/train/test_loop_acceptance.py runs it)
"""

from avatar_jax.configs._defaults import defaults

# `tiny:face`: what `avatar-jax train` needs to learn a talking mouth on a 2-core CPU in minutes, from
# `prepare --synthetic --avatar DIR` clips at 48 px with face framing. Particles sit where a face-framed clip
# moves (lips, eyelids, face), few on the body and the hands, which the camera barely sees. The keypoint loss
# is Charbonnier (the GM default treats a lip that is 2-4 px off at 48 px as an outlier and stops pulling)
# and its lip landmarks weigh 10x inside the face group: they teach the mouth directly.
FACE_RECIPE = {
    "model.num_particles": 24,
    "model.d_model": 32,
    "model.particle_counts": dict(body=2, face=4, upper_lip=6, lower_lip=8, eyelids=2, hands=2),
    "train.batch_size": 4,
    "train.seq_len": 8,
    "train.steps": 60,
    "train.learning_rate": 2e-3,
    "train.warmup_steps": 5,
    "loss.keypoints": 2.0,
    "loss.kpt_rho": "charbonnier",
    "loss.kpt_lips": 10.0,
}


def get_config(arg=None):
    c = defaults()
    if arg in (None, ""):
        return c
    if arg != "face":
        raise ValueError(f"tiny takes no argument or 'face' (the face-clip training recipe), got {arg!r}")
    for key, value in FACE_RECIPE.items():
        section, name = key.split(".")
        if isinstance(value, dict):
            for k, v in value.items():
                c[section][name][k] = v
        else:
            c[section][name] = value
    return c
