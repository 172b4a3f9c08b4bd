"""The cases of a prediction input: a folder in the imagesTs layout (CASE_0000.ext, ...) or one image file.

`list_inputs` groups channel files into cases and names every missing or extra channel file before anything is
predicted; `parse_part` reads --part K/N (the K-th of N interleaved shares of the sorted case list).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from autoseg.errors import ConfigError, DatasetError, ImageIOError


@dataclass(frozen=True)
class InputCase:
    case_id: str
    files: tuple[Path, ...]
    ending: str


def _split_name(path: Path) -> tuple[str, int | None, str] | None:
    """'a_0001.nii.gz' -> ('a', 1, '.nii.gz'); 'a.nii.gz' -> ('a', None, '.nii.gz'); None if not an image name."""
    from autoseg.data.image_io import SUPPORTED_ENDINGS, file_ending

    ending = file_ending(path)
    if ending not in SUPPORTED_ENDINGS or path.name.startswith(".") or not path.is_file():
        return None
    stem = path.name[: -len(ending)]
    m = re.match(r"^(.+)_(\d{4})$", stem)
    return (m.group(1), int(m.group(2)), ending) if m else (stem, None, ending)


def list_inputs(inp: str | Path, source) -> list[InputCase]:
    """Cases of a folder in imagesTs layout (CASE_0000.ext, CASE_0001.ext, ...) or of a single file.

    `source` is the ModelSource (files_per_case, channel_names, file_ending say what a case needs).
    """
    inp, n = Path(inp), source.files_per_case
    need = f"the model needs {n} channel file(s) per case: " + ", ".join(
        f"_{i:04d} ({c})" for i, c in enumerate(source.channel_names[:n])
    )
    if inp.is_file():
        parts = _split_name(inp)
        if parts is None:
            raise ImageIOError(f"{inp}: not an image file of a supported format")
        if n != 1:
            raise DatasetError(f"{inp}: a single file can only be predicted by a one-channel model; {need}")
        return [InputCase(parts[0], (inp,), parts[2])]
    if not inp.is_dir():
        raise DatasetError(f"{inp}: input folder or file not found")
    found: dict[str, dict[int, Path]] = {}
    endings: dict[str, str] = {}
    problems = []
    for p in sorted(inp.iterdir()):
        if p.is_symlink() and not p.exists():
            problems.append(f"{p}: is a broken symbolic link or a link loop (it points to no file)")
            continue
        parts = _split_name(p)
        if parts is None:
            continue
        cid, ch, ending = parts
        if ch is None and n == 1:
            ch = 0
        elif ch is None:
            problems.append(f"{p}: name does not end in _XXXX (channel index); {need}")
            continue
        if endings.setdefault(cid, ending) != ending:
            problems.append(f"{p}: case {cid!r} mixes file endings {endings[cid]!r} and {ending!r}")
        found.setdefault(cid, {})[ch] = p
    cases = []
    for cid, chans in sorted(found.items()):
        for i in range(n):
            if i not in chans:
                problems.append(f"case {cid!r}: channel file {inp / f'{cid}_{i:04d}{endings[cid]}'} is missing; {need}")
        problems += [f"{chans[i]}: channel {i} is more than the model takes; {need}" for i in chans if i >= n]
        cases.append(InputCase(cid, tuple(chans[i] for i in sorted(chans) if i < n), endings[cid]))
    if problems:
        more = f"\n... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise DatasetError("\n".join(problems[:10]) + more)
    if not cases:
        raise DatasetError(f"{inp}: no image files found (expected CASE_0000{source.file_ending}, ...)")
    return cases


def parse_part(part: str) -> tuple[int, int]:
    """'2/4' -> (2, 4): the second of four interleaved shares of the sorted case list."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(part))
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise ConfigError(f"--part {part!r}: expected K/N with 1 <= K <= N, e.g. --part 1/2")
    return int(m.group(1)), int(m.group(2))
