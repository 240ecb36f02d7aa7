"""CLI subcommands: each module here has ``register(subparsers)`` and is found automatically.

A module's ``register`` adds its parser(s) and sets ``func`` to a callable taking the
parsed ``argparse.Namespace`` and returning an exit status (0 on success). Async work
runs through :func:`ops.cli.run_async`. Errors are raised as ``SophiaError``; the CLI
turns them into a message on stderr and an exit status in one place.
"""
