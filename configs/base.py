"""One GPU node (e.g. 8 GPUs): data x model parallel, larger avatar and model.

Usage: --config configs/base.py[:model_ways]   e.g. configs/base.py:2 shards the model 2 ways.
"""

from avatar_jax.configs._defaults import defaults


def get_config(arg=None):
    c = defaults()
    model_ways = int(arg) if arg else 1
    c.mesh.model = model_ways
    c.render.width = c.render.height = 512
    c.model.num_particles = 256
    c.model.d_model = 256
    c.model.num_heads = 8
    c.model.num_gaussians = 100_000
    c.train.batch_size = 32
    c.train.seq_len = 25
    c.train.steps = 200_000
    c.train.learning_rate = 3e-4
    c.train.checkpoint_dir = "runs/base"
    c.train.checkpoint_every = 2000
    c.train.log_every = 100
    return c
