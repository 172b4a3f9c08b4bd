"""Quality-control pictures: image slices with the reference label contours (solid) and predicted contours (dashed).

Per case one PNG ``<case>.png`` with one panel per viewing axis: the axis-0 slice holding the most foreground (label,
else prediction; the middle slice when there is none) and, for 3D images, the axis-1 and axis-2 slices through the
foreground the same way. Pixels are shown with their physical aspect ratio (spacing), intensities windowed between
the 0.5th and 99.5th percentile of the case's channel. Every PNG is exactly ``panel_px`` high and ``panel_px`` wide per
panel. Rendering uses matplotlib's Agg canvas without pyplot (no display, no global state); files are written
atomically.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autoseg.data.dataset import list_cases, load_dataset
from autoseg.data.geometry import Geometry
from autoseg.data.image_io import read_image, read_label
from autoseg.errors import DatasetError, ImageIOError
from autoseg.log import logger, progress
from autoseg.serialization import atomic_write_bytes
from autoseg.workspace import Workspace

DPI = 100
AXIS_NAMES = ("axis 0", "axis 1", "axis 2")
MAX_PERCENTILE_SAMPLES = 1_000_000


@dataclass(frozen=True)
class OverlayCase:
    case_id: str
    images: tuple[Path, ...]
    label: Path | None
    prediction: Path | None


def intensity_window(values: np.ndarray, low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
    """(lo, hi) display window from percentiles of `values` (subsampled when large); hi > lo always.

    Voxels at the minimum value (air, zero padding) are left out when they are not almost all of the image and the
    rest is not constant, so the window spans the body rather than the background.
    """
    flat = np.asarray(values, dtype=np.float32).ravel()
    if flat.size > MAX_PERCENTILE_SAMPLES:
        flat = flat[:: flat.size // MAX_PERCENTILE_SAMPLES + 1]
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return 0.0, 1.0
    for values in (flat[flat > flat.min()], flat):
        if values.size >= 0.01 * flat.size:
            lo, hi = (float(v) for v in np.percentile(values, [low, high]))
            if hi > lo:
                return lo, hi
    return lo, lo + 1.0


def busiest_slice(mask: np.ndarray | None, axis: int) -> int:
    """Index along `axis` of the slice with the most nonzero voxels of `mask`; the middle one when it is empty."""
    if mask is None or not mask.any():
        return (mask.shape[axis] if mask is not None else 1) // 2
    other = tuple(a for a in range(mask.ndim) if a != axis)
    return int(np.argmax(np.count_nonzero(mask, axis=other)))


def _panel_axes(shape: Sequence[int], all_axes: bool) -> tuple[int, ...]:
    return (0, 1, 2) if all_axes and shape[0] > 1 else (0,)


def _aspect(spacing: Sequence[float], axis: int) -> float:
    rows, cols = [a for a in range(3) if a != axis]
    return float(spacing[rows]) / float(spacing[cols])


def _display(image: np.ndarray, rgb: bool) -> tuple[np.ndarray, tuple[float, float]]:
    """The volume to show ((Z, Y, X), or (Z, Y, X, 3) for RGB scaled to [0, 1]) and its window."""
    if rgb and image.shape[0] == 3:
        lo, hi = intensity_window(image)
        return np.clip((np.moveaxis(image, 0, -1) - lo) / (hi - lo), 0, 1), (0.0, 1.0)
    return image[0], intensity_window(image[0])


def _contours(ax, mask_volume, axis: int, index: int, colors: dict[int, tuple], style: str) -> None:
    plane = np.take(mask_volume, index, axis=axis)
    for value, color in colors.items():
        m = plane == value
        if m.any() and not m.all():
            ax.contour(m.astype(np.float32), levels=[0.5], colors=[color], linewidths=1.2, linestyles=style)


def render_case(
    image: np.ndarray,
    geometry: Geometry,
    label: np.ndarray | None,
    prediction: np.ndarray | None,
    label_names: dict[int, str],
    title: str = "",
    all_axes: bool = True,
    panel_px: int = 512,
    rgb: bool = False,
) -> bytes:
    """PNG bytes of the overlay of one case: image (C, Z, Y, X), label/prediction (Z, Y, X) or None."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    shape = image.shape[1:]
    for what, arr in (("label", label), ("prediction", prediction)):
        if arr is not None and arr.shape != shape:
            raise ValueError(f"{title}: {what} shape {arr.shape} differs from the image shape {shape}")
    volume, (lo, hi) = _display(image, rgb)
    guide = label if label is not None and label.any() else prediction
    foreground = guide > 0 if guide is not None else None
    palette = {v: _color(v) for v in sorted(label_names) if v != 0}
    axes = _panel_axes(shape, all_axes)
    fig = Figure(figsize=(panel_px * len(axes) / DPI, panel_px / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.02, right=0.98, top=1 - 42 / panel_px, bottom=26 / panel_px, wspace=0.05)
    for k, axis in enumerate(axes):
        ax = fig.add_subplot(1, len(axes), k + 1)
        index = busiest_slice(foreground, axis) if foreground is not None else shape[axis] // 2
        plane = np.take(volume, index, axis=axis)
        origin = "upper" if axis == 0 else "lower"  # slices through axis 0 show (Y, X); others keep Z upwards
        ax.imshow(plane, cmap="gray", vmin=lo, vmax=hi, origin=origin, aspect=_aspect(geometry.spacing, axis))
        for arr, style in ((label, "solid"), (prediction, "dashed")):
            if arr is not None:
                _contours(ax, arr, axis, index, palette, style)
        ax.set_title(f"{AXIS_NAMES[axis]} slice {index}", fontsize=9)
        ax.set_axis_off()
    handles = [Line2D([], [], color=c, lw=2, label=label_names[v]) for v, c in palette.items()]
    if label is not None and prediction is not None:
        handles += [Line2D([], [], color="k", lw=1, ls=s, label=n) for s, n in (("-", "label"), ("--", "prediction"))]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10, y=1 - 3 / panel_px, va="top")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _color(value: int) -> tuple:
    from matplotlib import colormaps

    return colormaps["tab10"]((value - 1) % 10)


def _prediction_files(pred_dir: Path, ending: str) -> dict[str, Path]:
    if not pred_dir.is_dir():
        raise DatasetError(f"{pred_dir}: prediction folder not found")
    files = {p.name[: -len(ending)]: p for p in sorted(pred_dir.iterdir()) if p.name.endswith(ending)}
    if not files:
        raise DatasetError(f"{pred_dir}: no prediction files ending in {ending}")
    return files


def find_overlay_cases(
    raw_folder: Path, cases: Sequence[str] | None = None, pred_dir: Path | None = None, max_cases: int | None = None
) -> tuple[object, list[OverlayCase]]:
    """(dataset spec, cases to draw): training cases, or with `pred_dir` every case (train or test) predicted there."""
    spec = load_dataset(raw_folder)
    found = {c.case_id: c for c in list_cases(spec)[0]}
    if (raw_folder / "imagesTs").is_dir():
        found.update({c.case_id: c for c in list_cases(spec, "imagesTs", None)[0] if c.case_id not in found})
    preds = _prediction_files(Path(pred_dir), spec.file_ending) if pred_dir is not None else {}
    if pred_dir is not None:
        unknown = sorted(set(preds) - set(found))
        if unknown:
            logger.warning(f"{pred_dir}: no image in {raw_folder} for prediction(s) {', '.join(unknown[:5])}")
        pool = sorted(set(preds) & set(found))
    else:
        pool = sorted(c for c in found if found[c].label is not None)
    if cases:
        missing = [c for c in cases if c not in pool]
        if missing:
            known = ", ".join(pool[:5]) + (" ..." if len(pool) > 5 else "")
            raise DatasetError(f"{raw_folder}: case(s) {', '.join(missing)} not found (cases: {known or 'none'})")
        pool = list(dict.fromkeys(cases))
    if not pool:
        raise DatasetError(f"{raw_folder}: no case to draw (no labelled training case or matching prediction)")
    pool = pool[:max_cases] if max_cases else pool
    return spec, [OverlayCase(c, found[c].images, found[c].label, preds.get(c)) for c in pool]


def overlay_dataset(
    ws: Workspace,
    dataset: str,
    out_dir: str | Path,
    cases: Sequence[str] | None = None,
    pred_dir: str | Path | None = None,
    max_cases: int | None = None,
    all_axes: bool = True,
    panel_px: int = 512,
) -> list[Path]:
    """Write ``<out_dir>/<case>.png`` for the chosen cases of a raw dataset; returns the files written."""
    name = ws.resolve(dataset)
    spec, chosen = find_overlay_cases(ws.raw_dataset(name), cases, pred_dir, max_cases)
    names = {**{v: str(v) for v in spec.label_values}, **spec.label_names, **spec.scheme.written_names()}
    written = []
    for case in progress(chosen, desc="overlay", unit="case"):
        image, geometry = read_image(case.images)
        label = read_label(case.label)[0] if case.label is not None else None
        pred = read_label(case.prediction)[0] if case.prediction is not None else None
        for path, arr in ((case.label, label), (case.prediction, pred)):
            if arr is not None and arr.shape != image.shape[1:]:
                raise ImageIOError(
                    f"{path}: shape {arr.shape} differs from the image {case.images[0]} {image.shape[1:]}"
                )
        title = f"{name} {case.case_id}" + (" (label solid, prediction dashed)" if pred is not None else "")
        png = render_case(image, geometry, label, pred, names, title, all_axes, panel_px, spec.rgb)
        written.append(atomic_write_bytes(Path(out_dir) / f"{case.case_id}.png", png))
    return written
