"""Prediction from raw image files: read -> preprocess -> sliding window per fold -> raw grid -> labels -> write.

A `ModelSource` says where a trained model lives (run folders in a workspace, or an installed bundle, see
autoseg.bundle); a `Predictor` holds the networks of one configuration (one per fold), rebuilt from the plans'
NetworkSpec through the networks registry, so the trainer class is never needed. The folds' logits are averaged
(as nnU-Net does) and turned into probabilities; several configurations (an ensemble) are combined by averaging those
probabilities in the raw image grid. Outputs keep the input's size, spacing, origin, direction and file ending.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from autoseg.errors import ConfigError, DatasetError, ImageIOError
from autoseg.log import logger, progress


@dataclass(frozen=True)
class ModelSource:
    """A trained model: plans, label/channel description and the weight file of every (configuration, fold)."""

    dataset: str
    plans: object  # Plans
    labels: dict[str, int]
    channel_names: tuple[str, ...]
    file_ending: str
    weights: dict[str, dict[int | str, Path]]  # configuration -> fold -> checkpoint / weights file
    selection: object | None  # Selection
    location: Path  # results folder or bundle folder (for messages)
    fingerprint: object | None = None  # DatasetFingerprint: intensity statistics when the plans hold none

    @property
    def num_classes(self) -> int:
        return max(self.labels.values()) + 1

    @property
    def files_per_case(self) -> int:
        rgb = self.file_ending in (".png", ".bmp", ".tif", ".tiff") and [c.lower() for c in self.channel_names] in (
            ["r", "g", "b"],
            ["red", "green", "blue"],
        )
        return 1 if rgb else len(self.channel_names)

    def trained(self) -> list[str]:
        """Configurations with at least one fold's weights, in plans order."""
        return [c.name for c in self.plans.configurations if self.weights.get(c.name)]


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Model weights from a training checkpoint (its 'model' entry) or a bundle's weights file; never unpickles code."""
    from autoseg.training.checkpoint import load_checkpoint

    path = Path(path)
    if path.name.startswith("checkpoint_"):
        return load_checkpoint(path)["model"]
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means the file is unusable; say which and why
        raise ConfigError(f"{path}: cannot be loaded as weights ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{path}: not a state dict of tensors")
    return state


class Predictor:
    """The networks of one configuration (one per fold) and how to run them on a raw image."""

    def __init__(
        self,
        source: ModelSource,
        configuration: str,
        folds: Sequence[int | str] | None = None,
        device: str | torch.device | None = None,
        step: float = 0.5,
        tta: bool = True,
    ):
        from autoseg.networks.build import build_network

        self.source, self.step, self.tta = source, step, tta
        self.configuration = source.plans.configuration(configuration)
        available = source.weights.get(configuration, {})
        if not available:
            raise ConfigError(f"{source.location}: configuration {configuration!r} has no trained fold")
        chosen = list(available) if folds is None else list(folds)
        missing = [f for f in chosen if f not in available]
        if missing:
            raise ConfigError(
                f"{source.location}: fold {missing[0]} of {configuration!r} is not trained (final weights missing); "
                f"available folds: {', '.join(map(str, available))}"
            )
        self.folds = tuple(chosen)
        self.device = torch.device(device) if device is not None else _default_device()
        self.models = []
        for f in self.folds:
            net = build_network(self.configuration.network, self.in_channels, source.num_classes, False)
            try:
                net.load_state_dict(load_state_dict(available[f]))
            except RuntimeError as exc:
                raise ConfigError(f"{available[f]}: weights do not fit the plans' network ({str(exc)[:300]})") from None
            net.deep_supervision = False
            self.models.append(net.to(self.device).eval())

    @property
    def in_channels(self) -> int:
        return len(self.configuration.normalization)

    def logits(self, data: np.ndarray) -> torch.Tensor:
        """Fold-averaged logits (K, *shape) on the CPU of a preprocessed case (C, *shape)."""
        from autoseg.inference.sliding_window import sliding_window_logits

        image = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
        mirror = tuple(range(self.configuration.ndim)) if self.tta else ()
        total = None
        for net in self.models:
            out = sliding_window_logits(
                net, image, self.configuration.patch_size, step=self.step, mirror_axes=mirror, device=self.device
            )
            total = out if total is None else total.add_(out)
        return total / len(self.models)

    def probabilities(self, image: np.ndarray, geometry) -> np.ndarray:
        """Softmax probabilities (K, Z, Y, X) float32 in the raw grid of `image` (C, Z, Y, X)."""
        from autoseg.inference.export import restore_probabilities

        case = _preprocess(image, geometry, self.source, self.configuration)
        probs = torch.softmax(self.logits(case.data), 0).numpy()
        return restore_probabilities(probs, case.properties, self.configuration).astype(np.float32, copy=False)


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _preprocess(image: np.ndarray, geometry, source: ModelSource, configuration):
    """Preprocess an unlabelled image exactly as the training data (preprocessing.preprocess.preprocess_case)."""
    from autoseg.preprocessing.preprocess import preprocess_case

    return preprocess_case(image, None, geometry, source.plans, configuration, source.fingerprint)


# ---- input listing ---------------------------------------------------------------------------------------------
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


def list_inputs(inp: str | Path, source: ModelSource) -> list[InputCase]:
    """Cases of a folder in imagesTs layout (CASE_0000.ext, CASE_0001.ext, ...) or of a single file."""
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


# ---- the folder loop -------------------------------------------------------------------------------------------
def predict_folder(
    predictors: Sequence[Predictor],
    inp: str | Path,
    out: str | Path,
    postprocessing: Sequence[Sequence[int]] = (),
    save_probabilities: bool = False,
    part: tuple[int, int] = (1, 1),
    resume: bool = False,
) -> list[Path]:
    """Predict every input case (its share under `part`) with the ensemble of `predictors`; returns written files.

    `out` is a folder, or with a single input file also a file name with a supported ending.
    """
    from autoseg.data.image_io import SUPPORTED_ENDINGS, check_inputs, read_image, write_label
    from autoseg.evaluation.postprocess import apply_postprocessing
    from autoseg.inference.ensemble import average_probabilities, probabilities_to_labels
    from autoseg.inference.ensemble import save_probabilities as save_npz

    source = predictors[0].source
    cases = list_inputs(inp, source)
    k, n = part
    cases = cases[k - 1 :: n]
    out = Path(out)
    single_file = Path(inp).is_file() and out.name.lower().endswith(SUPPORTED_ENDINGS)
    for case in cases:  # every input is checked before the first output is written (no partial output folder)
        check_inputs(case.files)
    written = []
    times = []
    for case in progress(cases, desc="predict", unit="case"):
        target = out if single_file else out / f"{case.case_id}{case.ending}"
        npz = target.parent / f"{case.case_id}.npz"
        if resume and target.is_file() and (npz.is_file() or not save_probabilities):
            logger.debug(f"{target}: exists, skipped (--continue)")
            continue
        start = time.perf_counter()
        image, geometry = read_image(case.files, check_integrity=False)  # checked above
        if image.shape[0] != predictors[0].in_channels:
            raise ImageIOError(
                f"case {case.case_id!r}: the image has {image.shape[0]} channel(s) "
                f"({', '.join(str(f) for f in case.files)}), the model expects {predictors[0].in_channels}"
            )
        probs = [p.probabilities(image, geometry) for p in predictors]
        probs = probs[0] if len(probs) == 1 else average_probabilities(probs)
        labels = apply_postprocessing(probabilities_to_labels(probs), postprocessing)
        if save_probabilities:
            save_npz(npz, probs)
        written.append(write_label(target, labels, geometry))
        times.append(time.perf_counter() - start)
        logger.debug(f"{case.case_id}: {times[-1]:.2f} s")
    if times:
        logger.info(f"predicted {len(times)} case(s) in {sum(times):.1f} s ({np.mean(times):.2f} s/case) -> {out}")
    return written


# ---- what to predict with --------------------------------------------------------------------------------------
def choose_configurations(source: ModelSource, configuration: str | None, ensemble: bool):
    """(configurations, postprocessing steps): -c, else --ensemble's selection, else the best single configuration.

    Postprocessing is applied only when the configurations are exactly the selection's winner (it was decided on
    that model's cross-validation predictions).
    """
    sel, trained = source.selection, source.trained()
    if configuration is not None:
        configs = (configuration,)
    elif ensemble:
        if sel is None:
            raise ConfigError(
                f"{source.location}: --ensemble needs a model selection; run `autoseg select -d "
                f"{source.dataset}` after training all folds (or choose a configuration with -c)"
            )
        configs = tuple(sel.configurations)
    elif sel is not None and not sel.is_ensemble:
        configs = tuple(sel.configurations)
    elif sel is not None:
        singles = [c for c in sel.candidates if len(c.configurations) == 1]
        best = max(singles, key=lambda c: -1.0 if c.mean_dice is None else c.mean_dice)
        configs = tuple(best.configurations)
        logger.info(f"selection's best model is the ensemble {'+'.join(sel.configurations)}; add --ensemble to use it")
    else:
        preferred = [c for c in ("3d_fullres", "2d") if c in trained]
        configs = (preferred[0] if preferred else (trained[0] if trained else "3d_fullres"),)
    missing = [c for c in configs if c not in trained]
    if missing:
        raise ConfigError(
            f"{source.location}: configuration {missing[0]!r} has no trained fold; "
            f"trained: {', '.join(trained) if trained else 'none'}"
        )
    steps = sel.postprocessing.steps if sel is not None and tuple(sel.configurations) == configs else ()
    return configs, steps


def run_predict(
    ws,
    inp,
    out,
    *,
    dataset=None,
    configuration: str | None = None,
    folds: Sequence[int | str] | None = None,
    ensemble: bool = False,
    fast: bool = False,
    tta: bool = True,
    step: float | None = None,
    save_probabilities: bool = False,
    device: str | None = None,
    part: str = "1/1",
    resume: bool = False,
    model_dir=None,
    plans_name: str = "default",
    trainer: str = "default",
    postprocess: bool = True,
) -> list[Path]:
    """`autoseg predict`: resolve the model (run folders or bundle), the configurations and folds, then predict.

    `fast`: the first trained fold only, no mirroring, step 0.75 (unless `folds` / `step` are given).
    """
    from autoseg.bundle import resolve_source

    share = parse_part(part)
    if step is not None and not 0 < step <= 1:
        raise ConfigError(f"--step {step}: must be in (0, 1]; 0.5 is the default, larger is faster")
    source = resolve_source(ws, dataset, model_dir, plans_name, trainer)
    configs, steps = choose_configurations(source, configuration, ensemble)
    if fast:
        tta = False
        step = 0.75 if step is None else step
    dev = _resolve_device(device)
    predictors = []
    for c in configs:
        use = folds if folds is not None or not fast else [next(iter(source.weights[c]))]
        predictors.append(Predictor(source, c, use, dev, 0.5 if step is None else step, tta))
    logger.info(
        f"predicting with {source.dataset} {'+'.join(configs)} (folds {', '.join(map(str, predictors[0].folds))}), "
        f"TTA {'on' if tta else 'off'}, step {predictors[0].step}, device {dev}, postprocessing "
        + ("; ".join("+".join(map(str, s)) for s in steps) if steps and postprocess else "none")
    )
    return predict_folder(predictors, inp, out, steps if postprocess else (), save_probabilities, share, resume)


def _resolve_device(name: str | None) -> torch.device:
    if name is None:
        return _default_device()
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    if name != "cpu" and not name.startswith("cuda"):
        raise ConfigError(f"--device {name!r}: use cpu or cuda")
    return torch.device(name)
