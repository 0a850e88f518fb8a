"""``dwfhpc image``: build, check, deploy and roll back the Apptainer images (for cluster admins)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _kv(text: str) -> tuple[str, str]:
    key, _, value = text.partition("=")
    return key, value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("image", help="build, check, deploy and roll back Apptainer images")
    s = p.add_subparsers(dest="image_command", metavar="ACTION", required=True)
    b = s.add_parser("build", help="apptainer build containers/NAME.def (with a wheel of this checkout)")
    b.add_argument("name")
    b.add_argument("--out", type=Path, default=Path("images"))
    b.add_argument("--build-arg", type=_kv, action="append", default=[], metavar="KEY=VALUE")
    b.add_argument("--no-fakeroot", action="store_true")
    b.add_argument("--config", default=None, help="site config whose images.build_args / images.fakeroot apply")
    b.set_defaults(func=build)
    c = s.add_parser("check", help="run dwfhpc --version inside an image")
    c.add_argument("image", type=Path)
    c.set_defaults(func=check)
    d = s.add_parser("deploy", help="copy an image to a versioned name and make it current")
    d.add_argument("name")
    d.add_argument("image", type=Path)
    d.add_argument("--to", type=Path, required=True)
    d.set_defaults(func=deploy)
    r = s.add_parser("rollback", help="make the previous deployment current again")
    r.add_argument("name")
    r.add_argument("--to", type=Path, required=True)
    r.set_defaults(func=rollback)


def build(args: argparse.Namespace) -> int:
    from ..config import load_site
    from ..images import build_image, check_image

    build_args, fakeroot = {}, None
    if args.config:
        site = load_site(args.config)
        build_args, fakeroot = dict(site.images.build_args), site.images.fakeroot
    build_args.update(dict(args.build_arg))  # the command line wins over the site config
    out = build_image(args.name, args.out / f"{args.name}.sif", build_args=build_args,
                      fakeroot=False if args.no_fakeroot else fakeroot)
    print(f"{out}: built; {check_image(out)}")
    return 0


def check(args: argparse.Namespace) -> int:
    from ..images import check_image

    print(f"{args.image}: {check_image(args.image)}")
    return 0


def deploy(args: argparse.Namespace) -> int:
    from ..images import deploy_image

    target = deploy_image(args.name, args.image, args.to)
    print(f"{args.to / (args.name + '.sif')} -> {target.name}")
    return 0


def rollback(args: argparse.Namespace) -> int:
    from ..images import rollback_image

    target = rollback_image(args.name, args.to)
    print(f"{args.to / (args.name + '.sif')} -> {target.name}")
    return 0
