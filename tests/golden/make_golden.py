"""Write golden files: tiny upstream PyTorch modules, their inputs and their outputs.

Runs ONLY in the separate Python 3.11 venv that `make golden` builds (torch, transformers,
diffusers). Every producer below creates a tiny randomly initialised upstream model with a fixed
seed, saves it in its upstream on-disk format (safetensors or a transformers directory), and saves
inputs and outputs as .npz. The files are small and committed; our tests load them with our own
converters and never import torch.

Add a producer with @producer("name"); run a subset with --only name1,name2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

PRODUCERS = {}


def producer(name):
    def register(fn):
        PRODUCERS[name] = fn
        return fn

    return register


def save_npz(path, **arrays):
    np.savez(path, **{k: np.asarray(v.detach().cpu().numpy() if torch.is_tensor(v) else v) for k, v in arrays.items()})


@producer("mlp")
def make_mlp(out_dir):
    """A tiny torch MLP (Linear -> LayerNorm -> GELU(tanh) -> Linear) as a safetensors state dict."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.LayerNorm(16), torch.nn.GELU(approximate="tanh"), torch.nn.Linear(16, 4)
    ).eval()
    x = torch.randn(5, 6)
    with torch.no_grad():
        y = model(x)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(out_dir, "mlp.safetensors"))
    save_npz(os.path.join(out_dir, "mlp_io.npz"), x=x, y=y)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "data"))
    parser.add_argument("--only", default="", help="comma-separated producers (default: all)")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(PRODUCERS)
    unknown = set(names) - set(PRODUCERS)
    if unknown:
        sys.exit(f"unknown producers {sorted(unknown)}; known: {sorted(PRODUCERS)}")
    import transformers

    for name in names:
        out_dir = os.path.join(args.out, name)
        os.makedirs(out_dir, exist_ok=True)
        PRODUCERS[name](out_dir)
        with open(os.path.join(out_dir, "VERSIONS.json"), "w") as f:
            json.dump({"torch": torch.__version__, "transformers": transformers.__version__}, f, indent=1)
        print(f"golden: wrote {out_dir}")


if __name__ == "__main__":
    main()
