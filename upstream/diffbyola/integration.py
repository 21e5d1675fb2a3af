"""This upstream in s3prl: ``register()``, the in-process downstream runner and ``s3prl-install``, plus
their ``hear-diffbyola s3prl`` / ``s3prl-install`` commands (registered through the
``hear_diffbyola.commands`` entry-point group).

The s3prl mechanics (compatibility shims, hub attributes, the runner, linking into a tree) live in the
core, ``hear_diffbyola.s3prl``, which knows nothing of this folder; this module hands it our entries
and our folder.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from hear_diffbyola import s3prl as _s3prl

__all__ = ["ENTRIES", "register", "run_downstream", "upstream_source", "install", "uninstall", "add_parser"]

ENTRIES = ("diffbyola", "diffbyola_local")  # the hub names hubconf.py defines


def register() -> list[str]:
    """Make ``S3PRLUpstream("diffbyola")`` / ``"diffbyola_local"`` and the runner's ``-u diffbyola`` work
    in this process: sets our hub entries as attributes of ``s3prl.hub``. Idempotent; returns the names."""
    _s3prl.import_hub()  # shims first: hubconf's imports must not meet an unpatched torchaudio
    from . import hubconf

    return _s3prl.register_entries({name: getattr(hubconf, name) for name in ENTRIES})


def run_downstream(argv: Sequence[str]) -> int:
    """s3prl's own downstream runner in this process with the diffbyola entries registered; ``argv`` are
    its arguments, e.g. ``-m train -u diffbyola_local -k W -d emotion -c config.yaml -p EXPDIR``."""
    register()
    return _s3prl.run_runner(argv)


def upstream_source() -> Path:
    """The folder holding our expert.py and hubconf.py (``upstream/diffbyola`` in a source checkout)."""
    return Path(__file__).resolve().parent


def install(root: str | Path | None = None, copy: bool = False) -> list[str]:
    """Link (or copy) this folder into the s3prl tree at ``root`` (default: the installed s3prl) as
    ``s3prl/upstream/diffbyola`` and add it to ``s3prl/hub.py``. Idempotent; returns what changed."""
    return _s3prl.install(upstream_source(), root, copy=copy)


def uninstall(root: str | Path | None = None) -> list[str]:
    """Reverse :func:`install` exactly. Idempotent; returns what changed."""
    return _s3prl.uninstall(root)


# ---------------------------------------------------------------------------------------------------
# commands


def cmd_s3prl(args: argparse.Namespace) -> int:
    return run_downstream(args.runner_args)


def cmd_s3prl_install(args: argparse.Namespace) -> int:
    changed = uninstall(args.s3prl_root) if args.uninstall else install(args.s3prl_root, copy=args.copy)
    for line in changed or ["nothing to do: already " + ("uninstalled" if args.uninstall else "installed")]:
        print(f"[hear-diffbyola] {line}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``s3prl`` and ``s3prl-install`` to the top-level subcommands."""
    # prefix_chars="+": every argument after 's3prl' (-m, -u, --help ...) goes to s3prl's runner untouched
    s3 = sub.add_parser(
        "s3prl",
        prefix_chars="+",
        add_help=False,
        help="run s3prl's downstream runner with the diffbyola upstreams registered "
        "(arguments are run_downstream.py's, e.g. -m train -u diffbyola -d emotion -c CONFIG -p EXPDIR)",
    )
    s3.add_argument("runner_args", nargs=argparse.REMAINDER)
    s3.set_defaults(func=cmd_s3prl)

    si = sub.add_parser(
        "s3prl-install",
        help="link upstream/diffbyola into an s3prl tree and add it to s3prl/hub.py",
        description="For s3prl source checkouts: afterwards s3prl's own run_downstream.py knows "
        "-u diffbyola. Idempotent; --uninstall reverses it exactly.",
    )
    si.add_argument("--s3prl-root", help="s3prl checkout (or its s3prl/ package folder); default: the installed s3prl")
    si.add_argument("--copy", action="store_true", help="copy the upstream folder instead of linking it")
    si.add_argument("--uninstall", action="store_true", help="remove the link (or copy) and the hub.py line")
    si.set_defaults(func=cmd_s3prl_install)
