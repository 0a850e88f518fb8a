"""Subcommands of ``dwfhpc``: one module each, each with ``register(subparsers)``.

Flags that set a config value go into ``load_site(name, workdir=..., overrides={...})``; choices come
from the config's ``Literal`` types."""
