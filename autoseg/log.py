"""Logging: library modules log to the 'autoseg' logger; the CLI attaches a console handler."""

from __future__ import annotations

import logging
import os
import sys

logger = logging.getLogger("autoseg")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of the record (not the stream that was current at setup)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def setup_console(verbose: bool = False) -> None:
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    # replace an earlier console handler, keep handlers others attached (an embedding app's, a test's capture)
    logger.handlers[:] = [h for h in logger.handlers if not isinstance(h, _StderrHandler)] + [handler]
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


def progress(iterable=None, **kwargs):
    """A tqdm progress bar on stderr (disabled when AUTOSEG_NO_PROGRESS is set or output is not a terminal)."""
    from tqdm.auto import tqdm

    disable = bool(os.environ.get("AUTOSEG_NO_PROGRESS")) or kwargs.pop("disable", None)
    return tqdm(iterable, disable=disable, file=sys.stderr, dynamic_ncols=True, **kwargs)
