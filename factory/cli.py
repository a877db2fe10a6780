"""The `factory` command: dispatches to one module per subcommand (factory/commands/)."""

from __future__ import annotations

import argparse
import sys
from importlib import import_module

from factory import __version__
from factory.errors import FactoryError

COMMANDS = {
    "generate": "factory.commands.generate",
    "adversarial": "factory.commands.adversarial",
    "doctor": "factory.commands.doctor",
    "export": "factory.commands.export",
    "check": "factory.commands.check",
    "train": "factory.commands.train",
    "fuse": "factory.commands.fuse",
    "suite": "factory.commands.suite",
    "eval": "factory.commands.eval",
    "redteam": "factory.commands.redteam",
}


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every subcommand's flags."""
    parser = argparse.ArgumentParser(prog="factory", description=__doc__)
    parser.add_argument("--version", action="version", version=f"state-factory {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module_name in COMMANDS.items():
        module = import_module(module_name)
        module.add_arguments(sub.add_parser(name, help=module.__doc__, description=module.__doc__))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the `factory` command; FactoryErrors print their message and exit 2."""
    args = build_parser().parse_args(argv)
    module = import_module(COMMANDS[args.command])
    try:
        return module.main(args) or 0
    except FactoryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
