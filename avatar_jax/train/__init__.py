"""Training: losses, state, step, loop, sharding rules, checkpointing."""
