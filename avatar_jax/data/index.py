"""The dataset index: every finished clip with its identity-aware split (paper §4.1).

Split rule: for each subject, its clips are ordered by a seeded hash of their ids and the first
``k = max(1, round(held_out · n))`` go to ``test`` (``k = 0`` when the subject has a single clip, which
then stays in ``train``). So every identity with two or more clips is seen in training *and* has
held-out clips, and the assignment of a clip does not depend on which other subjects exist or on
the order clips were prepared in.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections import defaultdict

from avatar_jax.data import schema
from avatar_jax.errors import InputError

INDEX_FILE = "index.json"
SPLITS = ("train", "test")


def _rank(clip_id: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{clip_id}".encode()).hexdigest()


def assign_splits(subjects: dict[str, str], held_out: float = 0.1, seed: int = 0) -> dict[str, str]:
    """``{clip_id: subject_id}`` -> ``{clip_id: "train" | "test"}`` (identity-aware, see module doc)."""
    if not 0.0 <= held_out < 1.0:
        raise InputError(f"held_out must be in [0, 1), got {held_out}")
    by_subject: dict[str, list[str]] = defaultdict(list)
    for clip, subject in subjects.items():
        by_subject[subject].append(clip)
    split = {}
    for clips in by_subject.values():
        clips.sort(key=lambda c: _rank(c, seed))
        n = len(clips)
        k = 0 if n < 2 or held_out == 0.0 else max(1, round(held_out * n))
        for i, clip in enumerate(clips):
            split[clip] = "test" if i < k else "train"
    return split


def build_index(root: str, held_out: float = 0.1, seed: int = 0) -> dict:
    """Scan ``root/clips/*.json`` (finished clips), assign splits, write ``root/index.json``; returns it."""
    metas = [schema.ClipMeta.load(p) for p in sorted(glob.glob(os.path.join(root, "clips", "*.json")))]
    metas = [m for m in metas if os.path.exists(schema.clip_paths(root, m.clip_id)[0])]
    split = assign_splits({m.clip_id: m.subject_id for m in metas}, held_out, seed)
    index = {
        "held_out": held_out, "seed": seed,
        "clips": [{"clip_id": m.clip_id, "subject_id": m.subject_id, "num_frames": m.num_frames, "fps": m.fps,
                   "width": m.width, "height": m.height, "split": split[m.clip_id]} for m in metas],
    }
    tmp = os.path.join(root, INDEX_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump(index, f, indent=1)
    os.replace(tmp, os.path.join(root, INDEX_FILE))
    return index


def load_index(root: str) -> dict:
    path = os.path.join(root, INDEX_FILE)
    if not os.path.exists(path):
        raise InputError(f"{root!r} has no {INDEX_FILE}; run 'avatar-jax prepare' to build the dataset")
    with open(path) as f:
        return json.load(f)


def clips_in_split(index: dict, split: str) -> list[dict]:
    """Index entries of ``split`` ("train", "test" or "all"), in index order."""
    if split not in (*SPLITS, "all"):
        raise InputError(f"split must be one of {', '.join(SPLITS)} or all, got {split!r}")
    return [c for c in index["clips"] if split == "all" or c["split"] == split]
