"""``depthcube``: the console entry point (``depthcube = "depthcube.cli:main"``).

It builds one argparse parser from the subcommand registrations of each layer, imported normally:
:mod:`cube.cli` (demo, build, index, download, info), :mod:`loaders.cli` (plot, export),
:mod:`train.cli` (train) and :mod:`bench.cli` (bench). Those modules import nothing heavy; each
handler imports its layer when it runs, so ``depthcube build`` never imports torch.

User errors (bad options, bad config, bad inputs in --strict mode, an output that is not a
depthcube cube or is locked by another build, disk full, a read-only output) print one line
``depthcube <cmd>: error: ...`` and exit 2; no traceback reaches the user for these. A command
whose optional dependencies are not installed says which extra to install, in one line, and
exits 2: ``depthcube train needs the 'train' extra: pip install 'depthcube[train]'``.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys

import bench.cli
import cube.cli
import loaders.cli
import train.cli
from cube.errors import DepthcubeError

#: The optional top-level modules each extra of pyproject.toml installs (tests check the two agree).
EXTRA_MODULES = {"train": ("torch", "torchdata", "lightning", "tensorboard"), "export": ("rasterio", "torch"),
                 "s3": ("s3fs",), "bench": ("pyinterp", "psutil", "torch"), "download": ("copernicusmarine",)}


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def make_parser() -> argparse.ArgumentParser:
    """The ``depthcube`` parser with every layer's subcommands."""
    p = _Parser(prog="depthcube", description="Raw ocean NetCDF -> chunked Zarr cube -> streaming training samples.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for register in (cube.cli.register, loaders.cli.register, train.cli.register, bench.cli.register):
        register(sub)
    return p


#: Options whose value may start with '-' (a negative number): ``--region -6.4,-3,10,12``.
_NEGATIVE_VALUE_OPTIONS = ("--region",)
_NUMBERS = re.compile(r"^-?\d*\.?\d+(e[-+]?\d+)?(,-?\d*\.?\d+(e[-+]?\d+)?)*$", re.IGNORECASE)


def _join_negative_values(argv: list[str]) -> list[str]:
    """``--region -6.4,...`` as ``--region=-6.4,...``: argparse reads a value starting with '-'
    (other than one plain negative number) as an option and fails with 'expected one argument'."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in _NEGATIVE_VALUE_OPTIONS and _NUMBERS.match(arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def missing_extra(command: str, error: ImportError) -> str | None:
    """The extra that installs the module ``error`` misses: the command's own extra when it has
    one that does (``depthcube bench`` without torch: 'bench'), else the first that does; None
    when no extra installs it (then the error is a bug, not a missing install). fsspec's
    "Install s3fs to access S3" names its module in the message only."""
    for name in [error.name] if error.name else re.findall(r"[A-Za-z_][\w.]*", str(error)):
        module = name.split(".")[0]
        extras = [extra for extra, modules in EXTRA_MODULES.items() if module in modules]
        if extras:
            return command if command in extras else extras[0]
    return None


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(_join_negative_values(sys.argv[1:] if argv is None else list(argv)))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    name = " ".join(v for v in (args.command, getattr(args, "format", None)) if v)
    try:
        return args.func(args) or 0
    except ImportError as e:
        extra = missing_extra(args.command, e)
        if extra is None or args.verbose:
            raise
        print(f"depthcube {name} needs the '{extra}' extra: pip install 'depthcube[{extra}]'", file=sys.stderr)
        return 2
    except (DepthcubeError, ValueError, FileNotFoundError) as e:
        if args.verbose:
            raise
        _quiet_teardown()
        print(f"depthcube {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _quiet_teardown()
        print(f"depthcube {args.command}: interrupted", file=sys.stderr)
        return 130


def _quiet_teardown() -> None:
    """After the one-line error: writes that the error cut short (a full disk) can leave zarr's
    gathered asyncio tasks pending, and asyncio logs "Task was destroyed but it is pending!" for
    each when they are collected at exit; that is noise after the error line (seen under load in
    ``tests/cube/test_output_safety.py::test_disk_full_is_one_line_and_the_rerun_resumes``)."""
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
