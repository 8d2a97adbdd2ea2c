"""``avatar-jax vsd-compare --teacher W --data D --out O``: the w/o-VSD row of the paper's Table 3 on our data.

Thin layer over :mod:`avatar_jax.train.vsd_compare`: the student config (default ``tiny:face``) gets
:data:`~avatar_jax.train.vsd_compare.COMPARE_DEFAULTS` under the user's ``--config.KEY=VALUE`` overrides;
the same student is trained with and without VSD for every seed, the VSD weight is picked on a validation
split and both rows are scored on the test split (``OUT/vsd_compare.json``; a rerun resumes).
"""

from __future__ import annotations

import json
import os

from avatar_jax.train import vsd_compare as vc

DEFAULT_CONFIG = "configs/tiny.py:face"
BASE_OVERRIDES = vc.COMPARE_DEFAULTS


def add_arguments(parser):
    parser.add_argument("--teacher", required=True, help="a trained tiny-teacher workdir")
    parser.add_argument("--data", required=True, help="the dataset the teacher trained on (prepare --synthetic)")
    parser.add_argument("--out", required=True, help="folder for the comparison (data, runs, vsd_compare.json)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (student init, data order, VSD draws)")
    parser.add_argument("--weights", default="10,100,1000",
                        help="comma-separated VSD weights; the one with the best mean validation score is "
                             "reported on test")
    parser.add_argument("--no-progress", action="store_true")


def run(args, config) -> int:
    seeds = vc.parse_list(args.seeds, int, "seeds")
    weights = vc.parse_list(args.weights, float, "weights")
    config.vsd.teacher = args.teacher
    root = vc.comparison_data(args.teacher, args.data, os.path.join(args.out, "data"))
    val_root = vc.validation_data(args.teacher, args.data, os.path.join(args.out, "data_val"))
    res = vc.compare(config, args.out, seeds=seeds, weights=weights, data_root=root, val_root=val_root,
                     progress=not args.no_progress)
    print(json.dumps(res.get("summary"), indent=1))
    return 0
