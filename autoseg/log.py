"""Logging: library modules log to the 'autoseg' logger; the CLI attaches a console handler."""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger("autoseg")


def setup_console(verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


def progress(iterable=None, **kwargs):
    """A tqdm progress bar on stderr (disabled when AUTOSEG_NO_PROGRESS is set or output is not a terminal)."""
    import os

    from tqdm.auto import tqdm

    disable = bool(os.environ.get("AUTOSEG_NO_PROGRESS")) or kwargs.pop("disable", None)
    return tqdm(iterable, disable=disable, file=sys.stderr, dynamic_ncols=True, **kwargs)
