"""Synthetic clips of a reconstruct-format avatar for the training tests (test_loop.py, test_loop_acceptance.py)."""

import json
import os

from avatar_jax.data import corpus, index, rig, synthetic

SIZE = 32


def add_held_out(root: str, avatar: str, num_gaussians: int, *, voice: str = "en-us+f3", clips: int = 1,
                 size: int = SIZE, framing: str = "face", offset: int = 20, seed: int = 500) -> None:
    """Clips of unseen sentences in an unseen voice, as the test split (the rest stays train)."""
    r = rig.build_rig(synthetic.figure_from_avatar(avatar, num_gaussians, seed=0), seed=0)
    subject = index.load_index(root)["clips"][0]["subject_id"]
    cam = synthetic.frame_camera(r, size, framing)
    for k in range(clips):
        category, text = corpus.sentences(1, offset=offset + k)[0]
        clip = synthetic.make_clip(r, text, voice, size=size, framing=framing, seed=seed + k,
                                   capacity=synthetic.render_capacity(r, cam))
        synthetic.write_synthetic_clip(root, f"{subject}_heldout_{k:03d}", subject, clip, {"category": category})
    idx = index.build_index(root, held_out=0.0)
    for c in idx["clips"]:
        c["split"] = "test" if "_heldout_" in c["clip_id"] else "train"
    with open(os.path.join(root, index.INDEX_FILE), "w") as f:
        json.dump(idx, f)


def template_avatar(folder: str, num_gaussians: int) -> str:
    """An ``avatar.npz`` in reconstruct's format, on the body template at rest (a photo fit takes minutes)."""
    from avatar_jax.body.template import load_template
    from avatar_jax.gaussians import avatar_file, init

    os.makedirs(folder, exist_ok=True)
    cloud = init.init_on_template(load_template(), num_gaussians, seed=0, color=(0.8, 0.6, 0.5))
    avatar_file.save_avatar(os.path.join(folder, "avatar.npz"), cloud)
    return folder
