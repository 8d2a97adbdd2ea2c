"""The ``avatar-jax`` command: one entry point, one subcommand per job.

Every subcommand takes ``--config PATH[:ARG]`` (or a shipped name such as ``tiny``) and any number
of ``--config.key=value`` overrides. Errors in user input print one line and exit with status 2.
A subcommand whose feature is not built yet says so and exits 3.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from avatar_jax.errors import AvatarJaxError, NotBuiltError

EXIT_USAGE = 2
EXIT_NOT_BUILT = 3


@dataclass(frozen=True)
class Command:
    help: str
    module: str | None  # module with add_arguments(parser) and run(args, config) -> int; None: not built
    issue: str = ""  # where the missing piece is tracked


COMMANDS: dict[str, Command] = {
    "train": Command("train or distill an avatar model, sharded over a device mesh", "avatar_jax.commands.train"),
    "render": Command("render a talking video from audio or text", "avatar_jax.commands.render"),
    "export": Command("export a checkpoint into an inference bundle", "avatar_jax.commands.export"),
    "reconstruct": Command("build a canonical avatar from one photo", "avatar_jax.commands.reconstruct", ""),
    "prepare": Command("turn talking videos (or synthetic clips) into training records", "avatar_jax.commands.prepare"),
    "bench": Command("benchmarks: renderer, encoders, model, loader", "avatar_jax.commands.bench", ""),
    "eval": Command("evaluate a trained run on held-out clips (Table-2-style report)", "avatar_jax.commands.eval"),
    "demo": Command("the whole product: one photo -> talking avatar video (reconstruct, prepare, train, export, "
                    "render)", "avatar_jax.commands.demo", ""),
    "vsd-compare": Command("the w/o-VSD row of Table 3: a student with VSD from a tiny teacher vs without, over seeds",
                           "avatar_jax.commands.vsd_compare"),
    "motion-study": Command("the audio-driven model's 3D motion against the rig teacher (no renderer)",
                            "avatar_jax.eval.motion_study", ""),
}
MULTI_HOST = ("train",)  # commands that join a multi-host job (jax.distributed) from flags or environment


class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line (no usage dump, no traceback)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command-line parser. With ``only``, just that subcommand's module is imported for its options:
    a run pays for (and needs the dependencies of) the command it runs, not of every other command."""
    parser = _OneLineParser(
        prog="avatar-jax",
        description="Audio-driven full-body 3D Gaussian avatars from a single photo, in JAX.",
        epilog="Every command accepts --config PATH[:ARG] and --config.KEY=VALUE overrides.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_OneLineParser)
    for name, cmd in COMMANDS.items():
        status = "" if cmd.module else "  [not built yet]"
        p = sub.add_parser(name, help=cmd.help + status, description=cmd.help)
        p.add_argument("--config", default=None, help="config file (configs/tiny.py[:arg]) or name (tiny)")
        if cmd.module and only in (None, name):
            importlib.import_module(cmd.module).add_arguments(p)
        if name in MULTI_HOST and only in (None, name):
            from avatar_jax.train import distributed

            distributed.add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from avatar_jax.config import load_config, parse_cli_overrides

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        overrides, rest = parse_cli_overrides(argv)
        chosen = rest[0] if rest and rest[0] in COMMANDS else ""  # "": top-level help or a usage error
        parser = build_parser(only=chosen)
        if rest and not rest[0].startswith("-") and rest[0] not in COMMANDS:
            parser.error(f"unknown command {rest[0]!r}; choose from {', '.join(COMMANDS)}")
        args = parser.parse_args(rest)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        cmd = COMMANDS[args.command]
        if cmd.module is None:
            raise NotBuiltError(f"'{args.command}' is not built yet ({cmd.issue})")
        if args.command in MULTI_HOST:  # join the job before anything (config checks too) starts JAX
            from avatar_jax.train import distributed

            distributed.initialize_from_env(**distributed.launch_kwargs(args))
        module = importlib.import_module(cmd.module)
        # A command may bring its own default config and overrides that go under the user's (vsd-compare).
        config = load_config(args.config or getattr(module, "DEFAULT_CONFIG", None),
                             [*getattr(module, "BASE_OVERRIDES", ()), *overrides])
        return int(module.run(args, config) or 0)
    except NotBuiltError as e:
        print(f"avatar-jax: {e}", file=sys.stderr)
        return EXIT_NOT_BUILT
    except AvatarJaxError as e:
        print(f"avatar-jax: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("avatar-jax: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
