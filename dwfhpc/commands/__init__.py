"""Subcommands of ``dwfhpc``: one module each, each with ``register(subparsers)`` and a line (name, help) in
:data:`dwfhpc.cli.COMMANDS`; only the chosen one is imported, so a module imports at its top only what
``register`` needs and the rest inside the function that runs the command.

Flags that set a config value go into ``load_site(name, workdir=..., overrides={...})``; choices come
from the config's ``Literal`` types."""
