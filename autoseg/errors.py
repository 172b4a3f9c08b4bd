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
