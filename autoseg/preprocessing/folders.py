"""Output folders of preprocessing: locks, settings record, cleanup of killed runs, memory-bounded worker count.

A configuration folder belongs to one run at a time (`FolderLock`, exclusive). gt_segmentations/ is written by the
runs of every configuration, possibly at once (`SharedFolderLock`): its stale temporary files are removed only by a
run that finds no other run holding it.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from autoseg.errors import WorkspaceError
from autoseg.log import logger
from autoseg.planning.plans import Configuration, Plans
from autoseg.preprocessing.normalize import resolve_scheme
from autoseg.resources import available_memory as available
from autoseg.resources import choose_workers
from autoseg.serialization import load_json, remove_stale_temps, save_json, to_json

FORMAT_VERSION = 1  # bump when the stored arrays change meaning


def folder_settings(plans: Plans, configuration: Configuration, intensity: tuple | None) -> dict:
    """Everything that determines the arrays of a folder; a mismatch with the stored one invalidates the folder."""
    uses_ct = any(resolve_scheme(s) == "ct" for s in configuration.normalization)
    return {
        "format": FORMAT_VERSION,
        "transpose": list(plans.transpose),
        "spacing": list(configuration.spacing),
        "normalization": list(configuration.normalization),
        "use_mask_for_norm": list(configuration.use_mask_for_norm),
        "resampling": to_json(configuration.resampling),
        "intensity": to_json(intensity) if uses_ct else None,
    }


class FolderLock:
    """Exclusive advisory lock (flock) on ``<folder>/.lock``; released when the process ends, even by SIGKILL."""

    def __init__(self, folder: Path):
        self.path = folder / ".lock"
        self._fh = None

    def __enter__(self) -> FolderLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            fh.close()
            raise WorkspaceError(
                f"{self.path.parent}: another process (pid {holder}) is preprocessing this configuration; wait for it "
                f"to finish (the lock {self.path} is released automatically when it ends)"
            ) from exc
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, *exc) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class SharedFolderLock:
    """Shared flock on ``<parent>/.<folder name>.lock`` (beside the folder, whose listing stays unchanged) for a
    folder that several runs write at once. On entering, a run that finds no other holder takes it exclusively for a
    moment and removes the folder's stale temporary files; otherwise it waits for any such cleanup and skips its own
    (the other runs' temporary files may be in flight)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.path = folder.parent / f".{folder.name}.lock"
        self._fh = None

    def _lock(self, mode: int) -> bool:
        """Open and flock the lock file with `mode`; False if non-blocking and held elsewhere."""
        while True:
            self.folder.mkdir(parents=True, exist_ok=True)
            fh = open(self.path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
            try:
                fcntl.flock(fh.fileno(), mode)
            except BlockingIOError:
                fh.close()
                return False
            try:
                same = os.fstat(fh.fileno()).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fh = fh
                return True
            fh.close()  # removed by a run that rolled back while we waited: lock the new file

    def __enter__(self) -> SharedFolderLock:
        if self._lock(fcntl.LOCK_EX | fcntl.LOCK_NB):
            remove_stale_temps(self.folder)
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_SH)
        else:
            self._lock(fcntl.LOCK_SH)
        return self

    def release(self, remove_if_empty: bool = False) -> None:
        """Release the lock; before that, if no other run holds it, remove stale temporary files and (with
        `remove_if_empty`) the folder and the lock file when the folder holds nothing else."""
        if self._fh is None:
            return
        try:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            alone = True
        except BlockingIOError:
            alone = False
        if alone:
            remove_stale_temps(self.folder)
            if remove_if_empty and self.folder.is_dir() and not any(self.folder.iterdir()):
                self.folder.rmdir()
                self.path.unlink(missing_ok=True)
        self.__exit__()

    def __exit__(self, *exc) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def clean_folder(folder: Path, remove_cases: bool) -> None:
    """Remove temporary files of killed runs (`remove_stale_temps`, logged) and, if `remove_cases`, every stored
    case. Call it holding the folder's `FolderLock`."""
    remove_stale_temps(folder)
    if remove_cases:
        for pattern in ("*.json", "*.npy"):
            for p in folder.glob(pattern):
                p.unlink(missing_ok=True)


def prepare_folder(folder: Path, settings: dict, overwrite: bool) -> None:
    """Clean `folder` (call while holding its lock) and record `settings`; cases made otherwise are removed."""
    stored_path = folder / ".settings.json"
    stored = load_json(stored_path) if stored_path.is_file() else None
    stale = stored is not None and stored != json.loads(json.dumps(settings))
    if stale:
        logger.info(f"{folder}: preprocessing settings changed since the last run; recomputing every case")
    clean_folder(folder, remove_cases=overwrite or stale)
    save_json(stored_path, settings)


def choose_jobs(requested: int, bytes_per_case: float, available: float | None = None, what: str = "") -> int:
    """Workers that fit 80 % of the available memory, between 1 and `requested` (see autoseg.resources)."""
    return choose_workers(requested, bytes_per_case, what, available, stage="preprocess")


def available_memory() -> float | None:
    return available()
