"""Command-line entry point of metals."""

import sys


def main(argv: list[str] | None = None) -> int:
    """Run the metals command line."""
    print("metals: no subcommands yet", file=sys.stderr)
    return 2
