"""Subcommands of ``dwfhpc``: one module each, each with ``register(subparsers)``."""
