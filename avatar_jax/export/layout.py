"""What an inference bundle folder holds (shared by the writer and the loader; no model code here).

    BUNDLE/manifest.json                 format, version, rates, resolutions, cameras, file names
    BUNDLE/config.json                   the training config (plain JSON)
    BUNDLE/params.safetensors            the model parameters, flat names ("driving/encoder/conv1/kernel")
    BUNDLE/avatar.npz                    the canonical avatar: Gaussians + particle bindings + initial carry
    BUNDLE/avatar.ply                    the same Gaussians as a standard 3DGS .ply (for viewers)
    BUNDLE/functions/NAME.PLATFORM.jaxexport   serialised jax.export functions (encode, motion, frames_WxH)
"""

FORMAT = "avatar-jax-bundle"
VERSION = 1
MANIFEST = "manifest.json"
CONFIG = "config.json"
PARAMS = "params.safetensors"
AVATAR_NPZ = "avatar.npz"
AVATAR_PLY = "avatar.ply"
FUNCTIONS = "functions"
PLATFORMS = ("cpu", "cuda", "tpu")


def function_file(name: str, platform: str) -> str:
    return f"{FUNCTIONS}/{name}.{platform}.jaxexport"


def frames_name(width: int, height: int) -> str:
    return f"frames_{width}x{height}"
