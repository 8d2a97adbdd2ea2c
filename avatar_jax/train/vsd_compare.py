"""With vs without VSD (the w/o-VSD row of the paper's Table 3 on our data), over seeds, the VSD weight picked on
a validation split.

    teacher's data ──► OUT/data      train: the teacher's training clips (linked); test: the teacher's held-out set
                                     (unseen sentences, unseen voice ``teacher.eval_voice``)
                   ──► OUT/data_val  validation: other unseen sentences in another unseen voice (:data:`VAL_VOICE`)
    for seed s, for row in (w/o VSD, VSD at weight w for w in weights):
        OUT/runs/seed{s}/{without_vsd | vsd_w{w}}   trained (resumable), scored on validation and test
    weight* = argmax_w mean_s val(VSD at w, seed s)     (validation only; ties: the smaller weight)
    OUT/vsd_compare.json: per-seed rows, the choice, test mean and spread of both rows and of their paired difference

Each seed sets ``seed`` (student init, data order) and ``vsd.seed`` (the teacher's tau and noise draws). The score
is the held-out mouth-opening correlation with the rig (``train/evaluate.py``), PSNR in the person mask beside it.
"""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np

from avatar_jax.errors import ConfigError, InputError

COMPARE_FILE = "vsd_compare.json"
VAL_SCORES_FILE = "val_scores.json"  # in a run's workdir: its validation scores at its final step
WITH_VSD, WITHOUT_VSD = "with VSD", "w/o VSD"
VAL_VOICE = "en+f2"  # neither a training voice of the teacher (en-us, en+m3, en-us+f3) nor its test voice
VAL_OFFSET = 12  # corpus sentences 12..: between the training (0..7) and the test sentences (20..23)
VAL_CLIP_SEED = 800  # the test clips use 900 + k
SCORE = "mouth_corr"
# The comparison's student on top of its config (tiny:face: keypoint loss with the lips x10): no image loss, so the
# renders learn only from the keypoints and (rows with VSD) the teacher; windows of the teacher's 9 frames
# (5 latent frames); the variational form with the teacher's best held-out audio guidance (5, README "The tiny
# teacher"); the 4 test clips scored before and after. Later --config.KEY=VALUE overrides win.
COMPARE_DEFAULTS = ("loss.image=0", "loss.vsd=1.0", "vsd.variational=true", "vsd.audio_scale=5.0",
                    "train.seq_len=9", "train.eval_clips=4", "train.checkpoint_every=20")


def parse_list(text: str, kind, what: str) -> list:
    """``"0,1,2"`` -> ``[0, 1, 2]`` (``kind`` int or float); empty, repeated or malformed items are refused."""
    try:
        items = [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"--{what} must be comma-separated {kind.__name__}s, got {text!r}") from None
    if not items or len(set(items)) != len(items):
        raise InputError(f"--{what} must list one or more distinct values, got {text!r}")
    if kind is float and min(items) <= 0:
        raise InputError(f"--{what}: every VSD weight must be > 0 (the row without VSD is always run), got {text!r}")
    return items


def run_slug(weight: float | None) -> str:
    """Workdir name of a row: ``without_vsd`` or ``vsd_w{weight}`` (``10`` -> ``vsd_w10``, ``0.5`` -> ``vsd_w0.5``)."""
    return "without_vsd" if weight is None else f"vsd_w{weight:g}"


def row_overrides(seed: int, weight: float | None) -> tuple[str, ...]:
    """The config overrides of one run: its seed (student and teacher draws) and VSD weight (0 without VSD)."""
    return (f"seed={seed}", f"vsd.seed={seed}", f"loss.vsd={0.0 if weight is None else float(weight)}")


def select_weight(rows: list[dict], weights: list[float]) -> tuple[float, dict[str, float]]:
    """The VSD weight with the best mean validation score over seeds -> ``(weight, {str(weight): mean})``.

    ``rows``: dicts with ``weight`` (None without VSD), ``seed`` and ``val`` (scores). Every weight needs a
    validation score at every seed that has any row, else the choice would compare different seed sets."""
    seeds = sorted({r["seed"] for r in rows})
    means = {}
    for w in weights:
        vals = [r["val"].get(SCORE) for r in rows if r["weight"] == w]
        if len(vals) != len(seeds) or any(v is None for v in vals):
            raise InputError(f"VSD weight {w:g} has validation scores for {len(vals)} of {len(seeds)} seeds")
        means[f"{w:g}"] = float(np.mean(vals))
    best = max(weights, key=lambda w: (means[f"{w:g}"], -w))  # ties: the smaller weight
    return best, means


def spread(values: list[float]) -> dict:
    """``{mean, std (ddof=1; 0 for one value), min, max, n}`` of per-seed values."""
    a = np.asarray(values, np.float64)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0, "min": float(a.min()),
            "max": float(a.max()), "n": int(a.size)}


def summarise(rows: list[dict], weights: list[float]) -> dict:
    """The weight chosen on validation, then test scores of both rows (same seeds) and their paired difference."""
    best, val_means = select_weight(rows, weights)
    by_seed = {}
    for r in rows:
        by_seed.setdefault(r["seed"], {})[r["weight"]] = r
    seeds = sorted(by_seed)
    missing = [s for s in seeds if None not in by_seed[s] or best not in by_seed[s]]
    if missing:
        raise InputError(f"seeds {missing} lack the row without VSD or the chosen weight {best:g}")
    out = {"chosen_weight": best, "val_mean_by_weight": val_means,
           "val_without_vsd": spread([by_seed[s][None]["val"][SCORE] for s in seeds]), "seeds": seeds}
    for key in (SCORE, "psnr_mask"):
        without = [by_seed[s][None]["test"][key] for s in seeds]
        with_vsd = [by_seed[s][best]["test"][key] for s in seeds]
        out[f"test_{key}"] = {WITHOUT_VSD: spread(without), WITH_VSD: spread(with_vsd),
                              "with - w/o": spread([b - a for a, b in zip(without, with_vsd, strict=True)])}
    # every weight on test too, for the record (the choice above never reads these)
    out["test_mean_by_weight"] = {f"{w:g}": float(np.mean([by_seed[s][w]["test"][SCORE] for s in seeds]))
                                  for w in weights if all(w in by_seed[s] for s in seeds)}
    return out


# ---------------------------------------------------------------- data


def _finished_teacher(teacher_dir: str) -> dict:
    """The teacher run's summary; refuses a run that has not finished (a half-trained teacher would silently
    stand in for the trained one)."""
    from avatar_jax.teacher.tiny_training import SUMMARY_FILE

    path = os.path.join(teacher_dir, SUMMARY_FILE)
    summary = json.load(open(path)) if os.path.exists(path) else {}
    if summary.get("stopped") != "done" or summary.get("step") != summary.get("steps"):
        raise InputError(f"the tiny teacher in {teacher_dir!r} has not finished its training (no {SUMMARY_FILE} "
                         "of a finished run); rerun `avatar-jax train --config configs/teacher_tiny.py` there first")
    return summary


def _teacher_config(teacher_dir: str):
    import ml_collections

    from avatar_jax.train.checkpoint import CONFIG_FILE

    with open(os.path.join(teacher_dir, CONFIG_FILE)) as f:
        return ml_collections.ConfigDict(json.load(f))


def _link_training_clips(data: str, out: str) -> str:
    """Link ``data``'s avatars and training clips into ``out``; returns their subject."""
    from avatar_jax.data import index

    entries = index.clips_in_split(index.load_index(data), "train")
    if not entries:
        raise InputError(f"{data!r} has no training clips (expected the tiny teacher's prepared dataset)")
    os.makedirs(os.path.join(out, "clips"), exist_ok=True)
    if not os.path.exists(os.path.join(out, "avatars")):
        os.symlink(os.path.abspath(os.path.join(data, "avatars")), os.path.join(out, "avatars"))
    for e in entries:
        for ext in (".json", ".array_record"):
            src, dst = os.path.join(data, "clips", e["clip_id"] + ext), os.path.join(out, "clips", e["clip_id"] + ext)
            if not os.path.exists(dst):
                os.symlink(os.path.abspath(src), dst)
    return entries[0]["subject_id"]


def _write_split(out: str, clips: list, subject: str, tag: str, voice: str, held_split: str) -> None:
    """Write ``clips`` as ``{subject}_{tag}_{k}`` and the index: those clips ``held_split``, the rest train."""
    from avatar_jax.data import index, synthetic

    for k, clip in enumerate(clips):
        synthetic.write_synthetic_clip(out, f"{subject}_{tag}_{k:03d}", subject, clip,
                                       {"category": "held_out", "voice": voice})
    idx = index.build_index(out, held_out=0.0)
    for c in idx["clips"]:
        c["split"] = held_split if f"_{tag}_" in c["clip_id"] else "train"
    with open(os.path.join(out, index.INDEX_FILE), "w") as f:
        json.dump(idx, f)


def comparison_data(teacher_dir: str, data: str, out: str, clips: int | None = None) -> str:
    """``out``: the teacher's training clips (``data``, linked, split train) plus the teacher's own held-out set as
    the test split (``teacher.eval_sentences`` unseen sentences in the unseen voice ``teacher.eval_voice``, same rig
    and camera; :func:`avatar_jax.teacher.tiny_eval.held_out_clips`). Reuses a finished ``out``. Returns ``out``."""
    from avatar_jax.teacher import tiny_eval

    done = os.path.join(out, "vsd_compare_data.done")
    if os.path.exists(done):
        return out
    tconfig = _teacher_config(teacher_dir)
    subject = _link_training_clips(data, out)
    _write_split(out, tiny_eval.held_out_clips(tconfig, data, clips), subject, "heldout",
                 str(tconfig.teacher.eval_voice), "test")
    open(done, "w").close()
    return out


def validation_data(teacher_dir: str, data: str, out: str, clips: int | None = None) -> str:
    """``out``: validation clips in its test split (``clips``, default as many as the test set, of corpus sentences
    from :data:`VAL_OFFSET` in :data:`VAL_VOICE`: unseen by the teacher and the students, and not the test
    clips), beside the training clips (linked) so that the folder is a dataset of the same avatar. Reuses a
    finished ``out``. Returns ``out``."""
    from avatar_jax.teacher import tiny_eval

    done = os.path.join(out, "vsd_compare_val.done")
    if os.path.exists(done):
        return out
    tconfig = _teacher_config(teacher_dir)
    if VAL_VOICE in (str(tconfig.teacher.eval_voice), *tconfig.data.synthetic.voices):
        raise ConfigError(f"the validation voice {VAL_VOICE!r} is one of the teacher's voices")
    subject = _link_training_clips(data, out)
    count = int(tconfig.teacher.eval_sentences) if clips is None else clips
    _write_split(out, tiny_eval.held_out_clips(tconfig, data, count, voice=VAL_VOICE, offset=VAL_OFFSET,
                                               seed=VAL_CLIP_SEED), subject, "val", VAL_VOICE, "test")
    open(done, "w").close()
    return out


# ---------------------------------------------------------------- runs


def score_run(workdir: str, data_root: str, score_root: str, clips: int) -> dict:
    """Scores of ``workdir``'s newest checkpoint on ``score_root``'s test split (first ``clips`` clips, whole),
    exactly as training scores its held-out split (same constants, render settings and lip binding)."""
    from avatar_jax.train import data, evaluate, step
    from avatar_jax.train.restore import restore_run

    run = restore_run(workdir, data_root=data_root)
    config, source, trained = run.config, run.source, run.trained
    consts = step.make_constants(config, trained.avatar, trained.landmarks, trained.region)
    first = data.from_numpy({k: v[None] for k, v in source[0].items()})
    rs = step.render_settings(config, trained.avatar, first, source.width, source.height)
    scores = evaluate.evaluate(run.graphdef, run.params, consts, rs, score_root, clips=clips,
                               landmark_rest=trained.landmarks, region=trained.region)
    return {"step": run.step, **scores}


def _run_row(config, workdir: str, *, data_root: str, val_root: str, clips: int, log, progress: bool) -> dict:
    """Train (or reuse) one run; its test scores from its summary, validation scores from its final checkpoint
    (cached in ``workdir/val_scores.json``)."""
    from avatar_jax.train import loop

    tic = time.perf_counter()
    summary_path = os.path.join(workdir, loop.SUMMARY_FILE)
    summary = json.load(open(summary_path)) if os.path.exists(summary_path) else {}
    steps = int(config.train.steps)
    if summary.get("stopped") != "done" or summary.get("step") != steps:
        log(f"training {steps} steps in {workdir}")
        summary = loop.train(config, workdir, data_root=data_root, progress=progress)
    val_path = os.path.join(workdir, VAL_SCORES_FILE)
    val = json.load(open(val_path)) if os.path.exists(val_path) else {}
    if val.get("step") != steps or val.get("clips") != clips:
        val = score_run(workdir, data_root, val_root, clips)
        with open(val_path, "w") as f:
            json.dump(val, f)
    held = summary.get("held_out", {})
    return {"workdir": os.path.abspath(workdir), "step": summary.get("step"), "final_loss": summary.get("final_loss"),
            "before": held.get("before", {}), "test": held.get("after", {}), "val": val,
            "seconds": time.perf_counter() - tic}


def compare(config, out: str, *, seeds: list[int], weights: list[float], data_root: str, val_root: str,
            log=print, progress: bool = True) -> dict:
    """For every seed: the run without VSD, then one per VSD weight (``config`` with :func:`row_overrides`), in
    ``out/runs/seed{s}/``; each scored on validation and test; the weight picked on validation
    (:func:`summarise`); writes ``out/vsd_compare.json`` after every run (a partial file is a valid record)."""
    from avatar_jax.eval.ablations import Row, row_config

    if not str(config.vsd.teacher):
        raise ConfigError("vsd compare needs vsd.teacher (a tiny-teacher workdir)")
    clips = int(config.train.eval_clips)
    if not clips:
        raise ConfigError("vsd compare scores the held-out clips: set train.eval_clips > 0")
    result = {"data": os.path.abspath(data_root), "validation": os.path.abspath(val_root),
              "teacher": os.path.abspath(str(config.vsd.teacher)), "seeds": seeds, "weights": weights, "rows": []}

    def save():
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, COMPARE_FILE), "w") as f:
            json.dump(result, f, indent=1)

    for seed in seeds:
        # the row without VSD first: it needs no teacher, so it can run while the teacher still trains
        for w in (None, *weights):
            if w is not None and "teacher_step" not in result:
                result["teacher_step"] = _finished_teacher(str(config.vsd.teacher))["step"]
            name = WITHOUT_VSD if w is None else f"{WITH_VSD} at {w:g}"
            workdir = os.path.join(out, "runs", f"seed{seed}", run_slug(w))
            row = _run_row(row_config(config, Row(name, row_overrides(seed, w))), workdir, data_root=data_root,
                           val_root=val_root, clips=clips, log=log, progress=progress)
            result["rows"].append({"seed": seed, "weight": w, "name": name, **row})
            log(f"seed {seed}, {name}: test {row['test'].get(SCORE)}, validation {row['val'].get(SCORE)}")
            save()
            # Each row compiles its own train step and scorers; XLA:CPU maps every compiled kernel into memory
            # and a long sweep in one process would otherwise run into Linux's per-process mapping limit.
            jax.clear_caches()
    result["summary"] = summarise(result["rows"], weights)
    save()
    return result
