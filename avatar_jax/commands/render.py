"""``avatar-jax render --bundle BUNDLE (--audio FILE | --text "...") --out video.mp4``: a talking video.

Thin layer over :func:`avatar_jax.inference.render_video.render_video`; needs no training code.
"""

from __future__ import annotations

from rich.console import Console

from avatar_jax.errors import InputError


def add_arguments(parser):
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--audio", help="speech to lip-sync (wav, flac, mp3, m4a...; any rate, mixed to mono)")
    src.add_argument("--text", help="text to speak with the project's TTS (eSpeak)")
    parser.add_argument("--voice", default="en-us", help="eSpeak voice for --text (default en-us)")
    parser.add_argument("--bundle", required=True, help="bundle folder from 'avatar-jax export'")
    parser.add_argument("--out", required=True, help="output .mp4 (H.264 + AAC)")
    parser.add_argument("--resolution", default=None, help="WxH, one the bundle was exported for (default: its first)")
    parser.add_argument("--fps", type=float, default=None, help="output frame rate (default: the model's)")
    parser.add_argument("--camera", choices=("front", "orbit", "novel"), default="front",
                        help="front view, an orbit around the avatar, or a fixed novel view")
    parser.add_argument("--azimuth", type=float, default=30.0, help="novel view: degrees around the avatar")
    parser.add_argument("--elevation", type=float, default=0.0, help="novel/orbit: degrees above the front view")
    parser.add_argument("--orbit-seconds", type=float, default=8.0, help="orbit: seconds per turn")
    parser.add_argument("--chunk", type=int, default=16, help="frames per step (memory knob)")
    parser.add_argument("--ply-sequence", default=None, help="also write one 3DGS .ply per frame into this new folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def load_speech(args, sample_rate: int):
    """The audio to render: a file (checked, resampled to ``sample_rate``) or TTS of ``--text``."""
    if args.text is not None:
        if not args.text.strip():
            raise InputError("--text is empty; give something to say")
        from avatar_jax.audio.resample import resample
        from avatar_jax.audio.tts import synthesize

        audio, _ = synthesize(args.text, args.voice)
        return audio if sample_rate == 16000 else resample(audio, 16000, sample_rate)
    from avatar_jax.audio.io import load_audio

    audio, _ = load_audio(args.audio)
    if sample_rate != 16000:
        from avatar_jax.audio.resample import resample

        audio = resample(audio, 16000, sample_rate)
    return audio


def run(args, config) -> int:
    from avatar_jax.commands.export import parse_resolution
    from avatar_jax.export.loader import load_bundle
    from avatar_jax.inference.cameras import camera_path
    from avatar_jax.inference.render_video import check_writable, render_video

    del config  # the bundle carries its own
    console = Console()
    if not args.out.lower().endswith(".mp4"):
        raise InputError(f"--out must be an .mp4 file, got {args.out!r}")
    check_writable(args.out, "video")
    bundle = load_bundle(args.bundle)
    speech = load_speech(args, bundle.sample_rate)
    w, h = parse_resolution(args.resolution) if args.resolution else bundle.resolutions[0]
    if (w, h) not in bundle.resolutions:
        raise InputError(f"bundle {args.bundle!r} renders {bundle.resolution_list()}, not {w}x{h}")
    fps = float(args.fps or bundle.fps)
    if args.orbit_seconds <= 0:
        raise InputError(f"--orbit-seconds must be positive, got {args.orbit_seconds}")
    path = camera_path(bundle.front, w, h, args.camera, azimuth_deg=args.azimuth, elevation_deg=args.elevation,
                       period_frames=max(1, round(args.orbit_seconds * fps)))
    console.print(f"render {len(speech) / bundle.sample_rate:.2f} s of speech with {bundle.num_gaussians} Gaussians "
                  f"at {w}x{h}, {fps:g} fps, {args.camera} camera ({bundle.platform})")
    stats = render_video(bundle, speech, args.out, path, fps=fps, chunk=args.chunk, ply_dir=args.ply_sequence,
                         progress=not args.no_progress)
    console.print(f"wrote {args.out}: {stats.frames} frames in {stats.total_s:.1f} s = {stats.frames_per_second:.1f} "
                  f"frames/s (encoder {stats.encode_s:.1f} s, model {stats.model_s:.1f} s, "
                  f"render {stats.render_s:.1f} s, first-call compiles included)", soft_wrap=True)
    if args.ply_sequence:
        console.print(f"wrote {stats.frames} .ply files to {args.ply_sequence}", soft_wrap=True)
    return 0
