"""``dwfhpc config check FILE`` and ``dwfhpc config show NAME``."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="check or show configuration files")
    s = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    c = s.add_parser("check", help="validate site or instrument YAML files: every problem in every file, one a line (exit 2 if any)")
    c.add_argument("files", nargs="+", metavar="FILE")
    c.set_defaults(func=check)
    w = s.add_parser("show", help="print a site config with every default filled in")
    w.add_argument("name", help="shipped name (local, ctio, ozstar, g2) or path")
    w.set_defaults(func=show)
    ls = s.add_parser("list", help="list the shipped configs")
    ls.set_defaults(func=list_shipped)
    ref = s.add_parser("reference", help="print every setting with its type, default and meaning (Markdown)")
    ref.set_defaults(func=reference)


def check(args: argparse.Namespace) -> int:
    """Every file is checked; every problem is printed (``file: key.path: problem``, one a line, on stderr).

    Exit 0 when all files are fine, 2 (the CLI's error status) when any problem was found.
    """
    from ..config import load_any

    problems = bad_files = 0
    for f in args.files:
        try:
            settings = load_any(f)
        except ConfigError as exc:
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            problems += len(exc.problems)
            bad_files += 1
            continue
        print(f"{f}: ok ({type(settings).__name__.replace('Settings', '').lower()} config)")
    if problems:
        files = f" in {bad_files} of {len(args.files)} files" if len(args.files) > 1 else ""
        print(f"dwfhpc config: error: {problems} problem{'s' if problems > 1 else ''}{files}", file=sys.stderr)
        return 2
    return 0


def show(args: argparse.Namespace) -> int:
    from ..config import load_site

    print(json.dumps(load_site(args.name).model_dump(), indent=2))
    return 0


def list_shipped(args: argparse.Namespace) -> int:
    from ..config import shipped_configs

    for p in sorted(shipped_configs().glob("*.yaml")):
        print(f"{p.stem:10s} {p}")
    return 0


def _rows(model, prefix: str = ""):
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        annotation = field.annotation
        if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
            yield from _rows(annotation, f"{prefix}{name}.")
            continue
        kind = str(annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")
        default = field.get_default(call_default_factory=True)
        default_text = "required" if field.is_required() else repr(default)
        yield f"{prefix}{name}", kind, default_text, field.description or ""


def reference(args: argparse.Namespace) -> int:
    from ..config import InstrumentSettings, SiteSettings

    for title, model in (("Site config (configs/local.yaml, ctio, ozstar, g2)", SiteSettings),
                         ("Instrument config (configs/decam.yaml, hsc)", InstrumentSettings)):
        print(f"### {title}\n\n| key | type | default | meaning |\n|---|---|---|---|")
        for key, kind, default, desc in _rows(model):
            print(f"| `{key}` | {kind.replace('|', 'or')} | `{default}` | {desc} |")
        print()
    return 0
