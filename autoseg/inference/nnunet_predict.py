"""`autoseg predict --nnunet-model FOLDER [FOLDER ...]`: predict with nnU-Net v2 trained-model folders or zips.

Each folder is one configuration (`autoseg.inference.nnunet_source`); several folders form a configuration
ensemble. Prediction runs through autoseg's own road (Predictor -> predict_folder -> export_case), with nnU-Net's
inference settings: the checkpoint's mirror axes for TTA, the plans' patch size, tile step 0.5 and Gaussian
weighting, export back to the input's geometry.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from autoseg.errors import ConfigError
from autoseg.inference.inputs import parse_part
from autoseg.inference.nnunet_source import DEFAULT_CHECKPOINT, NnunetModel, load_nnunet_model, model_folders
from autoseg.inference.options import check_predict_options, resolve_engine
from autoseg.inference.predictor import Predictor, default_export_workers, predict_folder
from autoseg.log import logger


def check_compatible(models: Sequence[NnunetModel]) -> None:
    """Ensemble members must agree on labels, channels and file ending (else the average means nothing)."""
    first = models[0].source
    for m in models[1:]:
        s = m.source
        for what, a, b in (
            ("labels", first.labels, s.labels),
            ("channels", first.channel_names, s.channel_names),
            ("file ending", first.file_ending, s.file_ending),
        ):
            if a != b:
                raise ConfigError(f"{s.location}: {what} {b!r} differ from {first.location}'s {a!r}; an ensemble "
                                  "needs models of the same dataset")  # fmt: skip


def run_predict_nnunet(
    inp,
    out,
    models: Sequence[str | Path],
    *,
    folds: Sequence[int | str] | None = None,
    checkpoint: str = DEFAULT_CHECKPOINT,
    tta: bool = True,
    step: float | None = None,
    fast: bool = False,
    save_probabilities: bool = False,
    device: str | None = None,
    part: str = "1/1",
    resume: bool = False,
    postprocess: bool = True,
    workers: int | None = None,
    statistics: bool = False,
    backend: str = "auto",
    precision: str = "auto",
) -> list[Path]:
    """Predict every case of `inp` with the nnU-Net model folder(s)/zip(s) `models` -> written files.

    `folds`: default every fold with `checkpoint`; `fast`: first fold, no TTA, step 0.75. Postprocessing
    (postprocessing.json of the folds used) applies to a single model only, as nnU-Net's does.
    """
    share = parse_part(part)
    if not models:
        raise ConfigError("--nnunet-model needs at least one model folder or zip")
    check_predict_options(workers, step)
    if fast:
        tta, step = False, 0.75 if step is None else step
    with model_folders(models) as folders:
        loaded = [load_nnunet_model(f, folds, checkpoint) for f in folders]
        check_compatible(loaded)
        dev, backend, precision = resolve_engine(device, backend, precision)
        predictors = []
        for m in loaded:
            use = list(m.source.weights[m.configuration])
            use = use[:1] if fast and folds is None else use
            tile_step = 0.5 if step is None else step
            p = Predictor(m.source, m.configuration, use, dev, tile_step, tta, backend=backend, precision=precision)
            predictors.append(p)
        steps = loaded[0].postprocessing if len(loaded) == 1 and postprocess else ()
        for note in (n for m in loaded for n in m.notes):
            logger.warning(note)
        if len(loaded) > 1 and any(m.postprocessing for m in loaded):
            logger.warning("postprocessing.json of a single model is not applied to an ensemble")
        logger.info(
            "predicting with nnU-Net model(s) "
            + " + ".join(f"{m.source.location.name} (folds {', '.join(map(str, p.folds))}, trainer {m.trainer})"
                         for m, p in zip(loaded, predictors))
            + f", TTA {'on, mirror axes ' + str(list(predictors[0].mirror_axes)) if tta else 'off'}, step "
            f"{predictors[0].step}, device {dev}, backend {backend} {precision}, postprocessing "
            + ("; ".join("+".join(map(str, s)) for s in steps) if steps else "none")
        )  # fmt: skip
        workers = default_export_workers(dev) if workers is None else workers
        return predict_folder(
            predictors,
            inp,
            out,
            steps,
            save_probabilities=save_probabilities,
            part=share,
            resume=resume,
            workers=workers,
            statistics=statistics,
        )
