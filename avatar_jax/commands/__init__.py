"""The command-line layer: one thin module per ``avatar-jax`` subcommand (arguments -> library calls).

Each module has ``add_arguments(parser)`` and ``run(args, config) -> int`` and is registered in
:data:`avatar_jax.cli.COMMANDS`. Library code never imports from here.
"""
