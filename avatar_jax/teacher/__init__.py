"""Video-diffusion teacher: Wan2.1 DiT and video VAE ports, umT5 text encoder, audio adapter, sampler."""
