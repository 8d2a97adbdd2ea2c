"""Golden files for the evaluation metrics: SyncNet (syncnet-python), pytorch-fid's InceptionV3, cd-fvd's I3D.

Runs only in the golden venv, through ``make_golden.py``, which registers :data:`EVAL_PRODUCERS`.

- ``syncnet``: upstream's own ``SyncNetModel.S`` built with every channel width divided by 16 (the
  ``nn`` module its file uses is swapped for one whose Conv/BatchNorm/Linear shrink their widths: same
  layers, strides, paddings, pools and state-dict keys, kilobytes instead of 54 MB), random weights and
  batch-norm statistics, saved as a *legacy* ``torch.save`` state dict like the public
  ``syncnet_v2.model``. Upstream's ``SyncNetInstance.evaluate`` runs end to end on a 12-frame 224x224
  clip and 16-bit wav (frames written losslessly: PNG bytes under the ``.jpg`` names it globs, cv2 reads
  by content) and its (offset, confidence, min distance) are saved with the MFCCs of
  python_speech_features and both towers' embeddings.
- ``fid_inception``: pytorch-fid's ``InceptionV3`` (FID blocks, resize to 299, normalisation) with every
  ``BasicConv2d`` width divided by 16, random weights and statistics; the state dict in the layout of
  ``pt_inception-2015-12-05-*.pth`` (zip ``torch.save``), two image batches (one upsampled, one
  downsampled to 299), the pool3 features and pytorch-fid's ``calculate_frechet_distance`` of them.

- ``fvd_i3d``: cd-fvd's ``InceptionI3d`` (piergiaj's PyTorch I3D, the FVD network) with every width
  divided by 16 (25 logits), random weights and statistics, saved as ``i3d_pretrained_400.pt``; two
  16-frame 112x112 clips through cd-fvd's ``preprocess_i3d`` (resize to 224) and the network, and cd-fvd's
  own ``frechet_distance`` (SVD square roots) of two feature sets.

The torchvision wheel on the registry is built against CUDA torch, so its C extension does not load
beside the CPU torch; pytorch-fid needs only its pure-Python Inception modules, so the two operator
schemas torchvision registers fake kernels for are defined when this module is imported (before
transformers, which imports torchvision when it is installed) and the extension's absence is harmless.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import tempfile
import types

import numpy as np
import torch

EVAL_PRODUCERS = {}
SHRINK = 16


def _producer(name):
    def register(fn):
        EVAL_PRODUCERS[name] = fn
        return fn

    return register


def _save_npz(path, **arrays):
    np.savez(path, **{k: np.asarray(v.detach().cpu().numpy() if torch.is_tensor(v) else v) for k, v in arrays.items()})


def _randomize(model, seed):
    """Random weights (kept at a sane scale) and random batch-norm statistics: a wrong detail shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.state_dict().items():
            if not p.is_floating_point():
                continue
            if name.endswith("running_var"):
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            elif name.endswith("running_mean") or name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1:  # batch-norm scale
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (2.0 / p[0].numel()) ** 0.5)


def _upstream_file(package, name):
    """Load one module file of an installed package without running the package's __init__."""
    spec = importlib.util.find_spec(package)
    path = os.path.join(spec.submodule_search_locations[0], name + ".py")
    module_spec = importlib.util.spec_from_file_location(f"_golden_{package}_{name}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def _narrow_nn():
    """torch.nn with Conv2d/Conv3d/BatchNorm/Linear widths divided by SHRINK (1 and 3 input channels kept)."""

    def w(c):
        return c if c in (1, 3) else c // SHRINK

    def conv(cls):
        def make(*a, **k):  # positional or keyword in_channels / out_channels (pytorch_i3d uses keywords)
            a = list(a)
            i = k.pop("in_channels") if "in_channels" in k else a.pop(0)
            o = k.pop("out_channels") if "out_channels" in k else a.pop(0)
            return cls(w(i), w(o), *a, **k)

        return make

    nn = types.SimpleNamespace(**{k: getattr(torch.nn, k) for k in dir(torch.nn) if not k.startswith("__")})
    nn.Conv2d = conv(torch.nn.Conv2d)
    nn.Conv3d = conv(torch.nn.Conv3d)
    nn.BatchNorm1d = lambda c, *a, **k: torch.nn.BatchNorm1d(w(c), *a, **k)
    nn.BatchNorm2d = lambda c, *a, **k: torch.nn.BatchNorm2d(w(c), *a, **k)
    nn.BatchNorm3d = lambda c, *a, **k: torch.nn.BatchNorm3d(w(c), *a, **k)
    nn.Linear = lambda i, o, *a, **k: torch.nn.Linear(w(i), w(o), *a, **k)
    return nn


def syncnet_inputs():
    """30 frames 224x224 RGB (14x14 random blocks upsampled x16) and 1.2 s of int16 audio."""
    rng = np.random.default_rng(5)
    low = rng.integers(0, 256, size=(30, 14, 14, 3), dtype=np.uint8)
    frames = np.repeat(np.repeat(low, 16, axis=1), 16, axis=2)
    t = np.arange(30 * 640) / 16000.0
    audio = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.standard_normal(t.size)
    audio_i16 = np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16)
    return low, frames, audio_i16


@_producer("syncnet")
def make_syncnet(out_dir):
    import cv2
    import python_speech_features
    from scipy.io import wavfile

    model_mod = _upstream_file("syncnet_python", "SyncNetModel")
    inst_mod = _upstream_file("syncnet_python", "SyncNetInstance")
    model_mod.nn = _narrow_nn()
    torch.manual_seed(0)
    net = model_mod.S(num_layers_in_fc_layers=256).eval()
    _randomize(net, seed=1)
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, os.path.join(out_dir, "syncnet_v2.model"), _use_new_zipfile_serialization=False)

    low, frames, audio_i16 = syncnet_inputs()
    with tempfile.TemporaryDirectory() as tmp:
        for i, frame in enumerate(frames):
            ok, png = cv2.imencode(".png", np.ascontiguousarray(frame[..., ::-1]))
            assert ok
            with open(os.path.join(tmp, f"{i + 1:06d}.jpg"), "wb") as f:
                f.write(png.tobytes())
        wavfile.write(os.path.join(tmp, "audio.wav"), 16000, audio_i16)
        instance = inst_mod.SyncNetInstance(net, device="cpu")
        opt = types.SimpleNamespace(tmp_dir=tmp, batch_size=4, vshift=15)
        with torch.no_grad():
            offset, conf, minval = instance.evaluate(opt)
        sample_rate, read_back = wavfile.read(os.path.join(tmp, "audio.wav"))
    mfcc = python_speech_features.mfcc(read_back, sample_rate)
    # both towers on every window, built as evaluate builds them
    im = torch.from_numpy(np.transpose(frames[..., ::-1][None].astype(float), (0, 4, 1, 2, 3))).float()
    cc = torch.from_numpy(mfcc.T[None, None].astype(float)).float()
    n = min(len(frames), len(audio_i16) // 640) - 5
    with torch.no_grad():
        lip = net.forward_lip(torch.cat([im[:, :, v : v + 5] for v in range(n)], 0))
        aud = net.forward_aud(torch.cat([cc[:, :, :, 4 * v : 4 * v + 20] for v in range(n)], 0))
        dists = inst_mod.calc_pdist(lip, aud, vshift=15)
        mdist = torch.mean(torch.stack(dists, 1), 1)
    _save_npz(
        os.path.join(out_dir, "io.npz"),
        frames_low=low,
        audio_int16=audio_i16,
        mfcc=mfcc,
        lip=lip,
        aud=aud,
        mdist=mdist,
        offset=np.int64(offset),
        confidence=np.float64(conf),
        min_dist=np.float64(minval),
    )


def _define_torchvision_ops():
    """Define the two operator schemas torchvision registers fake kernels for, before anything imports it.

    The registry's torchvision wheel is built against CUDA torch: beside the CPU torch its extension does not
    load, and importing torchvision then fails on ``torchvision::nms`` -- and transformers imports torchvision
    whenever it is installed. With the schemas defined first, torchvision's pure-Python parts import and work.
    Runs when make_golden.py imports this module, so every producer (transformers' too) is covered.
    """
    if importlib.util.find_spec("torchvision") is None or "torchvision" in sys.modules:
        return None
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    return lib  # kept alive at module level: dropping it would remove the schemas


_TORCHVISION_OPS = _define_torchvision_ops()


def _torchvision():
    import torchvision

    return torchvision


@_producer("fid_inception")
def make_fid_inception(out_dir):
    torchvision = _torchvision()
    tv_inception = torchvision.models.inception
    from pytorch_fid import fid_score
    from pytorch_fid import inception as fid_inception

    narrow = _narrow_nn()
    original = tv_inception.BasicConv2d

    class NarrowBasicConv2d(original):
        def __init__(self, in_channels, out_channels, **kwargs):
            torch.nn.Module.__init__(self)
            self.conv = narrow.Conv2d(in_channels, out_channels, bias=False, **kwargs)
            self.bn = narrow.BatchNorm2d(out_channels, eps=0.001)

    tv_inception.BasicConv2d = NarrowBasicConv2d
    try:
        torch.manual_seed(0)
        # fid_inception_v3 builds the FID network then fetches its weights: hand it our random ones instead
        holder = {}

        def fake_fetch(*_a, **_k):
            return holder["state"]

        net = tv_inception.inception_v3(num_classes=1008, aux_logits=False, weights=None, init_weights=False)
        # fid_inception_v3's own steps (widths are divided inside BasicConv2d; blocks take full-size numbers)
        net.Mixed_5b = fid_inception.FIDInceptionA(192, pool_features=32)
        net.Mixed_5c = fid_inception.FIDInceptionA(256, pool_features=64)
        net.Mixed_5d = fid_inception.FIDInceptionA(288, pool_features=64)
        net.Mixed_6b = fid_inception.FIDInceptionC(768, channels_7x7=128)
        net.Mixed_6c = fid_inception.FIDInceptionC(768, channels_7x7=160)
        net.Mixed_6d = fid_inception.FIDInceptionC(768, channels_7x7=160)
        net.Mixed_6e = fid_inception.FIDInceptionC(768, channels_7x7=192)
        net.Mixed_7b = fid_inception.FIDInceptionE_1(1280)
        net.Mixed_7c = fid_inception.FIDInceptionE_2(2048)
        _randomize(net, seed=2)
        holder["state"] = {k: v.clone() for k, v in net.state_dict().items()}
        fid_inception.load_state_dict_from_url = fake_fetch
        model = fid_inception.InceptionV3([fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    finally:
        tv_inception.BasicConv2d = original
    # the classifier (fc, 2048 x 1008 even here) is not used by the pool3 features: left out of the file
    state = {
        k: v for k, v in holder["state"].items() if not k.endswith("num_batches_tracked") and not k.startswith("fc.")
    }
    torch.save(state, os.path.join(out_dir, "pt_inception.pth"))
    g = torch.Generator().manual_seed(3)
    small = torch.rand(3, 3, 64, 48, generator=g)  # upsampled to 299
    large_low = torch.rand(1, 3, 38, 42, generator=g)
    large = large_low.repeat_interleave(8, 2).repeat_interleave(8, 3)  # (1, 3, 304, 336): downsampled to 299
    with torch.no_grad():
        feat_small = model(small)[0].squeeze(-1).squeeze(-1)
        feat_large = model(large)[0].squeeze(-1).squeeze(-1)
    # Frechet distance of two feature sets, pytorch-fid's own statistics and formula
    rng = np.random.default_rng(4)
    a = rng.standard_normal((40, 6)) @ rng.standard_normal((6, 6))
    b = rng.standard_normal((50, 6)) @ rng.standard_normal((6, 6)) + 0.3
    mu_a, mu_b = a.mean(0), b.mean(0)
    sig_a, sig_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    fd = fid_score.calculate_frechet_distance(mu_a, sig_a, mu_b, sig_b)
    # a singular pair (fewer samples than dimensions) takes pytorch-fid's eps-offset branch
    c, d = rng.standard_normal((4, 6)), rng.standard_normal((5, 6))
    fd_singular = fid_score.calculate_frechet_distance(
        c.mean(0), np.cov(c, rowvar=False), d.mean(0), np.cov(d, rowvar=False)
    )
    _save_npz(
        os.path.join(out_dir, "io.npz"),
        small=small,
        large_low=large_low,
        feat_small=feat_small,
        feat_large=feat_large,
        a=a,
        b=b,
        fd=np.float64(fd),
        c=c,
        d=d,
        fd_singular=np.float64(fd_singular),
    )


@_producer("fvd_i3d")
def make_fvd_i3d(out_dir):
    _torchvision()
    from cdfvd.third_party.i3d import pytorch_i3d
    from cdfvd.third_party.i3d import utils as i3d_utils

    original = pytorch_i3d.nn
    pytorch_i3d.nn = _narrow_nn()
    try:
        torch.manual_seed(0)
        net = pytorch_i3d.InceptionI3d(400, in_channels=3).eval()
    finally:
        pytorch_i3d.nn = original
    _randomize(net, seed=6)
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, os.path.join(out_dir, "i3d_pretrained_400.pt"))
    rng = np.random.default_rng(7)
    low = rng.integers(0, 256, size=(2, 16, 14, 14, 3), dtype=np.uint8)
    videos = np.repeat(np.repeat(low, 8, axis=2), 8, axis=3)  # (2, 16, 112, 112, 3)
    with torch.no_grad():
        logits = net(i3d_utils.preprocess_i3d(videos))
    a = rng.standard_normal((40, 6)) @ rng.standard_normal((6, 6))
    b = rng.standard_normal((50, 6)) @ rng.standard_normal((6, 6)) + 0.3
    fd = i3d_utils.frechet_distance(torch.from_numpy(a), torch.from_numpy(b))
    _save_npz(os.path.join(out_dir, "io.npz"), videos_low=low, logits=logits, a=a, b=b, fd=fd.double())


@_producer("lpips")
def make_lpips(out_dir):
    """The ``lpips`` package's LPIPS (v0.1, AlexNet trunk) with every conv width divided by 16 (the heads follow),
    random trunk and heads; the trunk saved as torchvision's ``features.*`` state dict, the heads as lpips'
    ``lin{k}.model.1.weight`` file, and both as one saved ``LPIPS`` module (``net.slice*``); two batches of
    48x48 uint8 frames (``normalize=True`` on x/255), distances and their per-layer parts."""
    _torchvision()
    import lpips
    from lpips import pretrained_networks

    narrow = _narrow_nn()
    tv = pretrained_networks.tv
    original_conv, original_alexnet = torch.nn.Conv2d, tv.alexnet
    # lpips asks torchvision for alexnet(pretrained=...): hand it a random one (no download), built while
    # torch.nn.Conv2d shrinks widths, so torchvision's own AlexNet layout and lpips' heads both narrow
    tv.alexnet = lambda pretrained=False, **k: original_alexnet(weights=None)
    torch.nn.Conv2d = narrow.Conv2d
    try:
        torch.manual_seed(0)
        model = lpips.LPIPS(pretrained=False, net="alex", pnet_rand=True, verbose=False).eval()
    finally:
        torch.nn.Conv2d, tv.alexnet = original_conv, original_alexnet
    _randomize(model, seed=8)
    model.scaling_layer = lpips.lpips.ScalingLayer()  # fixed constants, not weights: keep upstream's
    state = model.state_dict()
    backbone = {re.sub(r"^net\.slice\d+\.", "features.", k): v for k, v in state.items() if k.startswith("net.")}
    heads = {k: v for k, v in state.items() if k.startswith("lin")}
    torch.save(backbone, os.path.join(out_dir, "alexnet_narrow.pth"))
    torch.save(heads, os.path.join(out_dir, "alex_heads_narrow.pth"))
    torch.save({k: v for k, v in state.items() if not k.startswith("scaling")}, os.path.join(out_dir, "lpips_full.pth"))
    rng = np.random.default_rng(9)
    a = rng.integers(0, 256, (3, 48, 48, 3), dtype=np.uint8)  # frames as the project stores them (N,H,W,3)
    b = np.clip(a + rng.normal(0, 40, a.shape), 0, 255).astype(np.uint8)
    b[0] = a[0]  # identical pair: distance 0

    def tensor(x):
        return torch.from_numpy(np.ascontiguousarray(np.transpose(x.astype(np.float32) / 255.0, (0, 3, 1, 2))))

    with torch.no_grad():
        total, layers = model(tensor(a), tensor(b), retPerLayer=True, normalize=True)
    _save_npz(os.path.join(out_dir, "io.npz"), a=a, b=b, total=total.reshape(-1),
              layers=torch.stack([x.reshape(-1) for x in layers]))
