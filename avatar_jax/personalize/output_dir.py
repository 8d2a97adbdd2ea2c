"""The output folder of ``reconstruct``: checked before any work, written all at once, never a mix.

``prepare`` runs first: it refuses a path that is a file, and a folder that already has entries
unless ``overwrite``; it creates the staging folder next to the target (so the final move is a
rename on one file system, and an unwritable parent fails now, not after minutes of fitting).
``commit`` moves the staged files into place: into a new or empty folder directly, or over an
existing folder by swapping whole folders (old moved aside, new renamed in, old deleted), so a
reader sees either the old set of files or the new one. ``discard`` removes the staging folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from avatar_jax.errors import InputError


def prepare(out_dir: str, overwrite: bool) -> str:
    """Check ``out_dir`` and return a fresh staging folder beside it."""
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise InputError(f"--out {out_dir} is an existing file, not a folder; choose another path")
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
        raise InputError(f"--out {out_dir} already exists and is not empty; pass --overwrite to replace it")
    parent = os.path.dirname(out_dir)
    try:
        os.makedirs(parent, exist_ok=True)
        return tempfile.mkdtemp(prefix=".reconstruct-", dir=parent)
    except OSError as e:
        raise InputError(f"cannot write next to --out {out_dir}: {e.strerror}") from None


def commit(staging: str, out_dir: str) -> None:
    """Move the files of ``staging`` into ``out_dir`` (replacing its previous contents, if any)."""
    out_dir = os.path.abspath(out_dir)
    if not os.path.isdir(out_dir) or not os.listdir(out_dir):
        if os.path.isdir(out_dir):
            os.rmdir(out_dir)
        os.replace(staging, out_dir)
        return
    old = tempfile.mkdtemp(prefix=".reconstruct-old-", dir=os.path.dirname(out_dir))
    os.rmdir(old)
    os.replace(out_dir, old)
    os.replace(staging, out_dir)
    shutil.rmtree(old, ignore_errors=True)


def discard(staging: str) -> None:
    shutil.rmtree(staging, ignore_errors=True)
