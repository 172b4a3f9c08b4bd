"""The `autoseg` command line: thin argparse handlers over the Python API."""

from autoseg.cli.main import main

__all__ = ["main"]
