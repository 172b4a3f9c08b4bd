"""Errors that reach the user as one plain message (no traceback unless --debug)."""


class AutosegError(Exception):
    """Base class: the message is complete and meant for the user."""


class DatasetError(AutosegError):
    """A raw dataset (dataset.json, images, labels) is missing or malformed."""


class ImageIOError(AutosegError):
    """An image file cannot be read or written."""


class WorkspaceError(AutosegError):
    """A workspace folder or dataset id cannot be resolved."""


class PlansError(AutosegError):
    """A plans file or a plans edit is invalid."""


class ConfigError(AutosegError):
    """A command-line setting (--set key=value, fold list, ...) is invalid."""


class FingerprintError(AutosegError):
    """A fingerprint file is missing or malformed."""


def problems_error(problems: list[str], what: str = "input problem") -> DatasetError:
    """One error naming every problem ("PATH: what is wrong"), one per line under a count line, e.g.
    "2 input problems:\\n  a_0000.nii.gz: file is empty (0 bytes)\\n  b_0000.nii.gz: ...". Raise it where every
    input has been checked, so that one run names everything the user has to fix."""
    n = len(problems)
    return DatasetError(f"{n} {what}{'s' if n != 1 else ''}:\n" + "\n".join(f"  {p}" for p in problems))
