"""The synthetic evaluation set: training clips in some voices, held-out clips of unseen sentences spoken by
an unseen voice (the index's ``test`` split), all of one rigged avatar.

``python -m avatar_jax.eval.synthetic_set --out DIR [--size 32] [--gaussians 600] [--voices en-us,en+m3]
[--sentences 3] [--held-out-voice en-us+f3] [--held-out-sentences 2]``

The training part is ``prepare --synthetic`` (same records, same stored avatar); the held-out clips take
corpus sentences from ``--held-out-offset`` on (past every training sentence) and a voice no training
clip uses. Resumable like ``prepare``: existing complete clips are kept.
"""

from __future__ import annotations

import argparse
import json
import os

from avatar_jax.data import corpus, index, records, rig, synthetic
from avatar_jax.errors import InputError

HELD_OUT_TAG = "_heldout_"


def make_set(out: str, *, avatar: str = "synthetic", size: int = 32, num_gaussians: int = 600,
             voices: tuple[str, ...] = ("en-us", "en+m3"), sentences: int = 3, held_out_voice: str = "en-us+f3",
             held_out_sentences: int = 2, held_out_offset: int = 20, framing: str = "face", seed: int = 0,
             progress: bool = True) -> dict:
    """Write the set into ``out``; returns ``{"train": n, "test": n}`` clip counts."""
    if held_out_voice in voices:
        raise InputError(f"the held-out voice {held_out_voice!r} is also a training voice; it must be unheard")
    if held_out_offset < sentences:
        raise InputError(f"held-out sentences start at corpus sentence {held_out_offset}, inside the "
                         f"{sentences} training sentences; use an offset >= {sentences}")
    opts = synthetic.SyntheticOptions(size=size, num_gaussians=num_gaussians, voices=tuple(voices),
                                      sentences=sentences, framing=framing)
    synthetic.prepare_synthetic(avatar, out, opts, held_out=0.0, seed=seed, progress=progress)
    subject = index.load_index(out)["clips"][0]["subject_id"]
    r = rig.build_rig(synthetic.figure_from_avatar(avatar, num_gaussians, seed=seed), seed=0)
    cam = synthetic.frame_camera(r, size, framing)
    capacity = synthetic.render_capacity(r, cam)
    for k in range(held_out_sentences):
        clip_id = f"{subject}{HELD_OUT_TAG}{k:03d}"
        if records.is_complete(out, clip_id):
            continue
        category, text = corpus.sentences(1, offset=held_out_offset + k)[0]
        clip = synthetic.make_clip(r, text, held_out_voice, size=size, framing=framing, seed=seed + 500 + k,
                                   capacity=capacity)
        synthetic.write_synthetic_clip(out, clip_id, subject, clip, {"category": category, "avatar": avatar})
    idx = index.build_index(out, held_out=0.0)
    for c in idx["clips"]:
        c["split"] = "test" if HELD_OUT_TAG in c["clip_id"] else "train"
    with open(os.path.join(out, index.INDEX_FILE), "w") as f:
        json.dump(idx, f)
    return {s: sum(c["split"] == s for c in idx["clips"]) for s in ("train", "test")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--avatar", default="synthetic")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--gaussians", type=int, default=600)
    p.add_argument("--voices", default="en-us,en+m3")
    p.add_argument("--sentences", type=int, default=3)
    p.add_argument("--held-out-voice", default="en-us+f3")
    p.add_argument("--held-out-sentences", type=int, default=2)
    p.add_argument("--held-out-offset", type=int, default=20)
    a = p.parse_args(argv)
    counts = make_set(a.out, avatar=a.avatar, size=a.size, num_gaussians=a.gaussians, voices=tuple(a.voices.split(",")),
                      sentences=a.sentences, held_out_voice=a.held_out_voice, held_out_sentences=a.held_out_sentences,
                      held_out_offset=a.held_out_offset)
    print(f"wrote {counts['train']} training and {counts['test']} held-out clips to {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
