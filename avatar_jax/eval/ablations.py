"""The Table-3 ablation runner: train every switch with the same budget, evaluate each on the held-out
clips, write the table. Resumable: finished rows are kept in ``ablations.json`` and never redone.

    base config ──► rows (full model, one per ``model.use_*`` switch turned off, w/o keypoint loss,
      w/o VSD where the base trains with it, the pose-driven baseline)
      ──► per row: train(WORKDIR/runs/<row>) ──► render the split ──► score_methods ──► ablations.json / .md

Every row trains from the same seed, on the same data, for the base config's ``train.steps``; only the
row's overrides differ. A killed run restarts at the first unfinished row, and that row's training
resumes from its own latest checkpoint (the training loop does that). The ground truth and the rest
pose (no motion) are scored once, as reference rows.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable

import ml_collections

from avatar_jax.errors import InputError
from avatar_jax.eval import report as report_lib

STATE_FILE = "ablations.json"
TABLE_FILE = "ablations.md"
FULL = "full model"
BASELINE = "pose-driven baseline"
REST = "rest pose (no motion)"


@dataclasses.dataclass(frozen=True)
class Row:
    name: str
    overrides: tuple[str, ...]  # config overrides (``key=value``) applied to the base config

    @property
    def slug(self) -> str:
        return report_lib.slug(self.name)


def ablation_rows(base: ml_collections.ConfigDict, *, baseline: bool = True) -> list[Row]:
    """The full model, then each ``model.use_*`` switch the base has on turned off, the loss ablations that
    exist for this base (keypoints, VSD: only when their weight is > 0), and the pose-driven baseline."""
    rows = [Row(FULL, ())]
    for key in sorted(base.model.keys()):
        if key.startswith("use_") and bool(base.model[key]):
            rows.append(Row(f"w/o {key[4:].replace('_', ' ')}", (f"model.{key}=false",)))
    if float(base.loss.keypoints) > 0:
        rows.append(Row("w/o keypoint loss", ("loss.keypoints=0",)))
    if float(base.loss.vsd) > 0:
        rows.append(Row("w/o VSD", ("loss.vsd=0",)))
    if baseline:
        rows.append(Row(BASELINE, ("model.kind=pose_driven",)))
    return rows


def row_config(base: ml_collections.ConfigDict, row: Row) -> ml_collections.ConfigDict:
    """``base`` with the row's overrides (typed as the base's keys)."""
    from avatar_jax.config import apply_overrides

    config = ml_collections.ConfigDict(base.to_dict())
    config.lock()
    apply_overrides(config, list(row.overrides))
    return config


def load_state(out_dir: str) -> dict:
    path = os.path.join(out_dir, STATE_FILE)
    if not os.path.exists(path):
        return {"rows": {}}
    try:
        with open(path) as f:
            state = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read the ablation state {path!r} ({e}); delete it to start over") from None
    if not isinstance(state.get("rows"), dict):
        raise InputError(f"{path!r} is not an ablation state (no 'rows'); delete it to start over")
    return state


def _write_state(out_dir: str, state: dict) -> None:
    path = os.path.join(out_dir, STATE_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f, indent=1, default=float)
    os.replace(tmp, path)  # a kill mid-write never leaves a half state


def markdown(state: dict, title: str = "Ablations") -> str:
    """Rows (in run order) x metrics; unfinished rows say so."""
    tables = {n: r["metrics"] for n, r in state["rows"].items() if r.get("status") == "done"}
    tables.update(state.get("references", {}))
    report = {"clips": state.get("clips", []), "frames": state.get("frames", 0), "methods": tables,
              "missing": state.get("missing", {})}
    text = report_lib.markdown(report, title) if tables else f"# {title}\n"
    budget = state.get("budget")
    if budget:
        text += f"\nSame budget for every row: {budget}.\n"
    pending = [n for n, r in state["rows"].items() if r.get("status") != "done"]
    if pending:
        text += "\nNot finished: " + ", ".join(pending) + "\n"
    return text


def render_run(workdir: str, name: str, root: str, clips: list[report_lib.EvalClip], rest: bool
               ) -> dict[str, list[report_lib.MethodOutput]]:
    """A trained row's renders of ``clips`` (and, with ``rest``, the rest-pose reference's)."""
    from avatar_jax.eval import run as run_lib

    trained = run_lib.load_run(workdir, name=name, data_root=root)
    methods = {name: [trained.render(c) for c in clips]}
    if rest:
        methods[REST] = [trained.render_rest(c) for c in clips]
    return methods


def run_ablations(base: ml_collections.ConfigDict, out_dir: str, *, data_root: str | None = None,
                  split: str = "held_out", clips: int = 0, frames: int = 0, opts: report_lib.Options | None = None,
                  rows: list[Row] | None = None, train_fn: Callable | None = None, render_fn: Callable = render_run,
                  clip_list: list[report_lib.EvalClip] | None = None, log: Callable[[str], None] = print,
                  progress: bool = True) -> dict:
    """Train and evaluate every row not finished in ``out_dir/ablations.json``; returns the state.

    ``train_fn(config, workdir, data_root=, progress=) -> summary`` defaults to
    :func:`avatar_jax.train.loop.train`; ``render_fn`` is :func:`render_run`'s signature; ``clip_list``
    defaults to the first ``clips`` clips of ``split`` (``frames`` frames each).
    """
    from avatar_jax.eval import run as run_lib

    if train_fn is None:
        from avatar_jax.train.loop import train as train_fn
    root = data_root or base.data.root
    rows = rows if rows is not None else ablation_rows(base)
    names = [r.name for r in rows]
    if len(set(names)) != len(names) or len({r.slug for r in rows}) != len(rows):
        raise InputError(f"ablation row names must be distinct, got {names}")
    os.makedirs(out_dir, exist_ok=True)
    state = load_state(out_dir)
    t = base.train
    budget = (f"{int(t.steps)} steps of {int(t.batch_size)} x {int(t.seq_len)} frames, lr {float(t.learning_rate):g}, "
              f"seed {int(base.seed)}")
    if state.get("budget") not in (None, budget):
        raise InputError(f"{out_dir!r} holds ablations of another budget ({state['budget']}; now {budget}); "
                         "use a new folder or the same config")
    state["budget"] = budget
    if clip_list is None:
        clip_list = run_lib.load_clips(root, split, clips, frames)
    state.update(split=split, data=os.path.abspath(root), clips=[c.clip_id for c in clip_list],
                 frames=int(sum(len(c.frames) for c in clip_list)))
    for r in rows:
        state["rows"].setdefault(r.name, {"overrides": list(r.overrides), "status": "pending"})
    _write_state(out_dir, state)
    opts = opts or report_lib.Options()
    done = sum(state["rows"][r.name].get("status") == "done" for r in rows)
    log(f"ablations: {len(rows)} rows, {done} finished before; budget {budget}; {len(clip_list)} held-out clips")
    tic = time.perf_counter()
    ran = 0
    for k, r in enumerate(rows):
        entry = state["rows"][r.name]
        if entry.get("status") == "done":
            continue
        eta = "" if not ran else f", ~{(time.perf_counter() - tic) / ran * (len(rows) - done - ran) / 60:.0f} min left"
        log(f"[{k + 1}/{len(rows)}] {r.name} ({', '.join(r.overrides) or 'base config'}): training{eta}")
        workdir = os.path.join(out_dir, "runs", r.slug)
        config = row_config(base, r)
        row_tic = time.perf_counter()
        summary = train_fn(config, workdir, data_root=root, progress=progress)
        log(f"[{k + 1}/{len(rows)}] {r.name}: evaluating on {len(clip_list)} clips")
        methods = render_fn(workdir, r.name, root, clip_list, "references" not in state)
        rep = report_lib.score_methods(clip_list, methods, opts)
        if "references" not in state:
            state["references"] = {REST: rep["methods"][REST],
                                   report_lib.GROUND_TRUTH: rep["methods"][report_lib.GROUND_TRUTH]}
        state.setdefault("missing", {}).update(rep["missing"])
        entry.update(status="done", workdir=os.path.abspath(workdir), metrics=rep["methods"][r.name],
                     step=summary.get("step") if summary else None,
                     final_loss=summary.get("final_loss") if summary else None,
                     seconds=time.perf_counter() - row_tic)
        _write_state(out_dir, state)
        with open(os.path.join(out_dir, TABLE_FILE), "w") as f:
            f.write(markdown(state))
        ran += 1
        log(f"[{k + 1}/{len(rows)}] {r.name}: done in {entry['seconds']:.0f} s, "
            + ", ".join(f"{m} {v:.3f}" for m, v in entry["metrics"].items() if v is not None))
    with open(os.path.join(out_dir, TABLE_FILE), "w") as f:
        f.write(markdown(state))
    return state
