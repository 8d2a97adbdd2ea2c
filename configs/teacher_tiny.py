"""The tiny teacher: a CPU-sized Wan2.1-architecture DiT + causal VAE + audio adapter trained from scratch on
the synthetic talking clips (a synthetic-data teacher for CPU experiments and tests, NOT Wan2.1).

    avatar-jax prepare --synthetic --avatar synthetic --out DATA --config configs/teacher_tiny.py
    avatar-jax train --config configs/teacher_tiny.py --workdir DIR --data DATA
    python -m avatar_jax.teacher.tiny_eval --workdir DIR --data DATA    # held-out mouth-opening scores

32x32 face framing (the mouth is ~6 px wide, its opening 0.5-3 px), windows of 9 frames (5 latent frames
of 8x8 after the VAE's /4 space, /2 time), flow matching. See avatar_jax/teacher/tiny_training.py.
"""

from avatar_jax.configs._defaults import defaults


def get_config(arg=None):
    del arg
    c = defaults()
    c.mesh.data, c.mesh.model = 1, -1  # the tiny teacher trains on one device (any batch size passes validation)
    c.train.target = "teacher"  # `avatar-jax train` trains the tiny teacher (avatar_jax/teacher/tiny_training.py)
    c.train.checkpoint_dir = "runs/teacher_tiny"
    c.train.batch_size = 8
    c.train.seq_len = 9  # 1 + 2*4 frames: 5 latent frames
    c.train.steps = 2300  # VAE steps first (teacher.vae_steps), the DiT + audio adapter after
    c.train.warmup_steps = 50
    c.train.log_every = 50
    c.train.checkpoint_every = 250
    c.data.stride = 2  # overlapping windows: more distinct training samples from few clips
    c.data.synthetic.size = 32
    c.data.synthetic.num_gaussians = 600
    c.data.synthetic.framing = "face"
    c.data.synthetic.voices = ("en-us", "en+m3", "en-us+f3")  # en-gb-scotland is held out (teacher.eval_voice)
    c.data.synthetic.sentences = 8
    c.data.held_out = 0.0  # every prepared clip trains; held out are other sentences in another voice (tiny_eval)

    tc = c.teacher
    tc.num_layers = 4
    tc.num_heads = 4
    tc.head_dim = 16
    tc.ffn_dim = 128
    tc.adapter_hidden = 64
    tc.n_mels = 16
    tc.vae_base_dim = 8
    tc.vae_z_dim = 8
    tc.vae_dim_mult = (1, 2, 2)  # space /4: 32x32 frames -> 8x8 latents
    tc.vae_temporal = (True, False)  # time /2
    # training (avatar_jax/teacher/tiny_training.py)
    tc.vae_steps = 300
    tc.vae_frames = 5  # the VAE trains on the first 1 + 2*2 frames of each window (it is the costly part)
    tc.vae_lr = 2e-3
    tc.vae_kl = 1e-4  # weight of the KL term (small: a near-deterministic autoencoder, Wan-like latents)
    tc.mouth_weight = 5.0  # L1 weight at the mouth (a Gaussian blob from the face keypoints) vs 1 elsewhere
    tc.dit_lr = 1e-3
    tc.audio_dropout = 0.2  # condition dropout: the unconditional branch for guidance
    # held-out evaluation (avatar_jax/teacher/tiny_eval.py): unseen sentences in an unseen voice
    tc.eval_voice = "en-gb-scotland"
    tc.eval_sentences = 4
    tc.eval_offset = 20  # corpus sentences from here on (training used 0..sentences-1)
    tc.sample_steps = 20
    tc.sample_shift = 3.0
    tc.audio_scale = 1.0
    return c
