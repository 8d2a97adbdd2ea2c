"""TPU pod slice: fully sharded data parallel plus model parallel for distillation.

Usage: --config configs/pod.py[:fsdp_ways]   (default 8: parameters sharded 8 ways)
"""

from avatar_jax.configs._defaults import defaults


def get_config(arg=None):
    c = defaults()
    c.mesh.fsdp = int(arg) if arg else 8
    c.mesh.model = 1
    c.render.width = c.render.height = 512
    c.model.num_particles = 512
    c.model.d_model = 512
    c.model.num_heads = 8
    c.model.num_gaussians = 200_000
    c.train.batch_size = 256
    c.train.seq_len = 25
    c.train.steps = 500_000
    c.train.learning_rate = 2e-4
    c.train.checkpoint_dir = "gs://YOUR_BUCKET/avatar-jax/pod"
    c.train.checkpoint_every = 1000
    c.train.log_every = 100
    return c
