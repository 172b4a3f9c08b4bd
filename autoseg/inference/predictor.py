"""Prediction from raw image files: read -> preprocess -> sliding window per fold -> raw grid -> labels -> write.

A `ModelSource` says where a trained model lives (run folders in a workspace, or an installed bundle, see
autoseg.inference.source); a `Predictor` holds the networks of one configuration (one per fold), rebuilt from the plans'
NetworkSpec through the networks registry, so the trainer class is never needed. A cascade configuration first
predicts its previous stage (all of that stage's folds) and adds that segmentation, preprocessed like a label, as one
one-hot input channel per foreground label. The folds' logits are averaged
(as nnU-Net does) and turned into probabilities; several configurations (an ensemble) are combined by averaging those
probabilities in the raw image grid. Outputs keep the input's size, spacing, origin, direction and file ending.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from autoseg.data.geometry import Geometry
from autoseg.data.image_io import supported_endings
from autoseg.data.probabilities import probabilities_to_labels
from autoseg.device import resolve_device
from autoseg.errors import ConfigError, problems_error
from autoseg.evaluation.statistics import statistics_from_files, write_statistics_csv
from autoseg.inference.backends.choice import backend_networks
from autoseg.inference.backends.precision import resolve_precision
from autoseg.inference.configurations import choose_configurations
from autoseg.inference.dicom_inputs import OUTPUT_TYPES, SEG_ENDING, seg_writer, series_statistics
from autoseg.inference.export import NetworkOutput, restore_probabilities
from autoseg.inference.exporter import Exporter, ExportJob, export_workers
from autoseg.inference.inputs import InputCase, input_problems, parse_part, read_case, scan_inputs
from autoseg.inference.options import check_predict_options, resolve_engine
from autoseg.inference.sliding_window import NNUNET_NUMERICS, sliding_window_logits
from autoseg.inference.source import ModelSource, resolve_source
from autoseg.log import logger, progress
from autoseg.networks.build import build_network
from autoseg.networks.nnunet_checkpoint import load_nnunet_weights
from autoseg.networks.weights import load_weights
from autoseg.preprocessing.cascade import convert_case, one_hot
from autoseg.preprocessing.preprocess import preprocess_case
from autoseg.preprocessing.storage import CaseProperties, PreprocessedCase
from autoseg.serialization import remove_stale_temps
from autoseg.workspace import Workspace


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
        models: Sequence[torch.nn.Module] | None = None,
        backend: str = "torch",
        precision: str | None = None,
    ):
        """The folds' networks are built from the plans and loaded from `source.weights`, unless `models` gives
        them already built (one per fold in `folds`: the end-of-fold validation passes the network it trained).
        `backend` (resolved: 'torch', 'onnxruntime', 'openvino') runs the loaded networks' forward passes in
        `precision` (resolved: 'fp32', 'bf16', 'fp16'; None: the device's default, fp16 on a GPU, else fp32)."""
        self.source, self.step, self.tta, self.backend = source, step, tta, backend
        self.configuration = source.plans.configuration(configuration)
        available = source.weights.get(configuration, {})
        if not available and models is None:
            raise ConfigError(f"{source.location}: configuration {configuration!r} has no trained fold")
        chosen = list(available) if folds is None else list(folds)
        missing = [f for f in chosen if f not in available] if models is None else []
        if missing:
            raise ConfigError(
                f"{source.location}: fold {missing[0]} of {configuration!r} is not trained (final weights missing); "
                f"available folds: {', '.join(map(str, available))}"
            )
        self.folds = tuple(chosen)
        self.device = torch.device(device) if device is not None else resolve_device(None)
        self.precision = precision or resolve_precision("auto", self.device, backend)
        self.memoize = False  # keep the last case's output: another predictor of the ensemble uses it too
        self._memo = None
        self.labels = source.scheme.foreground_labels
        self._previous = None  # built on first use: `share_previous_stages` may hand over an ensemble member first
        prev = self.configuration.previous_stage
        if prev is not None and models is None and not source.weights.get(prev):
            raise ConfigError(
                f"{source.location}: {configuration!r} is a cascade stage and needs the trained previous stage "
                f"{prev!r}, which has no trained fold"
            )
        self.models = [self._load(available[f]) for f in self.folds] if models is None else list(models)
        if len(self.models) != len(self.folds):
            raise ValueError(f"{len(self.models)} network(s) given for {len(self.folds)} fold(s)")
        if models is None:
            ckpts, cfg = [available[f] for f in self.folds], self.configuration
            self.models = backend_networks(
                self.models, ckpts, self.network_in_channels, cfg.patch_size, backend, cfg.network, self.precision
            )

    def _load(self, weights: Path) -> torch.nn.Module:
        """The plans' network with the weights of one fold, for inference on this predictor's device."""
        net = build_network(self.configuration.network, self.network_in_channels, self.source.num_classes, False)
        try:
            load = load_nnunet_weights if self.source.weights_format == "nnunet" else load_weights
            net.load_state_dict(load(weights))
        except RuntimeError as exc:
            raise ConfigError(f"{weights}: weights do not fit the plans' network ({str(exc)[:300]})") from exc
        net.deep_supervision = False
        return net.to(self.device).eval()

    @property
    def previous(self) -> Predictor | None:
        """A cascade stage's previous stage (all its folds, same device, step and TTA); None for other stages."""
        prev = self.configuration.previous_stage
        if prev is not None and self._previous is None:
            self._previous = Predictor(self.source, prev, None, self.device, self.step, self.tta, backend=self.backend,
                                       precision=self.precision)  # fmt: skip
        return self._previous

    @previous.setter
    def previous(self, predictor: Predictor) -> None:
        self._previous = predictor

    @property
    def in_channels(self) -> int:
        """Image channels of an input case."""
        return len(self.configuration.normalization)

    @property
    def network_in_channels(self) -> int:
        """Network input channels: the image's, plus one per foreground label for a cascade stage."""
        return self.in_channels + (len(self.labels) if self.configuration.previous_stage is not None else 0)

    @property
    def mirror_axes(self) -> tuple[int, ...]:
        """The axes mirrored for TTA: every axis, unless the model allows fewer (nnU-Net's checkpoints say)."""
        axes = self.source.mirror_axes.get(self.configuration.name, tuple(range(self.configuration.ndim)))
        return () if axes is None else tuple(axes)

    def logits(self, data: np.ndarray) -> torch.Tensor:
        """Fold-averaged logits (K, *shape) on the CPU of a preprocessed case (C, *shape)."""
        image = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
        mirror = self.mirror_axes if self.tta else ()
        total = None
        nnunet = self.source.weights_format == "nnunet"  # nnU-Net's numbers: float16 tile sums and fold sums
        for net in self.models:
            out = sliding_window_logits(
                net, image, self.configuration.patch_size, step=self.step, mirror_axes=mirror, device=self.device,
                use_gaussian=NNUNET_NUMERICS if nnunet else True,
            )  # fmt: skip
            out = out.half() if nnunet else out
            total = out if total is None else total.add_(out)
        return (total / len(self.models)).float()

    def network_output(self, image: np.ndarray, geometry: Geometry) -> NetworkOutput:
        """The network part of predicting a raw image (C, Z, Y, X): preprocess it exactly as the training data
        (a cascade stage adds its previous stage's prediction), then `preprocessed_output`."""
        if self.memoize and self._memo is not None and self._memo[0] is image:
            return self._memo[1]
        if self.previous is None:
            src = self.source
            case = preprocess_case(image, None, geometry, src.plans, self.configuration, src.fingerprint)
            data = case.data
        else:
            data, case = self._cascade_input(image, geometry)
        result = self.preprocessed_output(data, case.properties)
        if self.memoize:
            self._memo = (image, result)  # holds `image`, so a later case cannot be mistaken for it
        return result

    def preprocessed_output(self, data: np.ndarray, properties: CaseProperties) -> NetworkOutput:
        """(probabilities (K, *preprocessed shape) float32, `properties`, the configuration) of a preprocessed case
        (C, *shape): the one road that `predict` and the end-of-fold validation share; an `ExportJob` turns it into
        raw-grid probabilities and labels (`exporter.export_case`). Softmax over the classes, or for a dataset with
        regions one sigmoid per region (`LabelScheme.activation`)."""
        logits = self.logits(data)
        probs = torch.sigmoid(logits) if self.source.scheme.has_regions else torch.softmax(logits, 0)
        return probs.numpy(), properties, self.configuration

    def _cascade_input(self, image: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, PreprocessedCase]:
        """(preprocessed image + previous stage's one-hot channels, the PreprocessedCase) of a cascade stage."""
        labels = probabilities_to_labels(self.previous.probabilities(image, geometry))
        src = self.source
        case, prev = convert_case(image, labels, geometry, src.plans, self.configuration, src.fingerprint)
        return np.concatenate([case.data, one_hot(prev, self.labels)]), case

    def probabilities(self, image: np.ndarray, geometry: Geometry) -> np.ndarray:
        """Softmax probabilities (K, Z, Y, X) float32 in the raw grid of `image` (C, Z, Y, X)."""
        return restore_probabilities(*self.network_output(image, geometry)).astype(np.float32, copy=False)


# ---- the folder loop -------------------------------------------------------------------------------------------
def predict_folder(
    predictors: Sequence[Predictor],
    inp: str | Path,
    out: str | Path,
    postprocessing: Sequence[Sequence[int]] = (),
    save_probabilities: bool = False,
    part: tuple[int, int] = (1, 1),
    resume: bool = False,
    workers: int = 1,
    statistics: bool = False,
    force_modality: bool = False,
    output_type: str = "default",
) -> list[Path]:
    """Predict every input case (its share under `part`) with the ensemble of `predictors`; returns written files.

    `out` is a folder, or with a single input file also a file name with a supported ending. `workers` export
    processes resample, postprocess and write a case while the network works on the next one (1: everything in this
    process, one case after the other; the outputs are the same). `statistics`: also write statistics.csv beside the
    outputs (`write_folder_statistics`). `resume` (--continue) skips finished cases and first removes the temporary
    files a killed run left in the output folder (without --part: other parts may be writing there). A folder of
    DICOM series gives one case per series (`force_modality`: predict a series whose Modality is not the model's);
    `output_type` "dicom-seg" writes each case as a DICOM-SEG referencing its series (<case>.dcm), "default" the
    input's format (NIfTI for DICOM input).
    """
    source = predictors[0].source
    every, problems = scan_inputs(inp, source, force_modality)
    k, n = part
    cases = every[k - 1 :: n]
    out = Path(out)
    single_file = Path(inp).is_file() and out.name.lower().endswith(supported_endings())

    dicom_seg = output_type == "dicom-seg"
    if dicom_seg:  # a DICOM-SEG references its source series: DICOM input only
        problems += [f"{c.files[0]}: --output-type dicom-seg needs DICOM input" for c in every if c.series is None]

    def target_of(case: InputCase) -> Path:
        return out if single_file else out / f"{case.case_id}{SEG_ENDING if dicom_seg else case.ending}"

    # every input is checked, and every problem named, before the first output is written (no partial output folder)
    if problems := problems + input_problems(cases, predictors[0].in_channels):
        raise problems_error(problems)
    if resume and not single_file and n == 1:
        remove_stale_temps(out)
    todo = []
    for case in cases:
        target = target_of(case)
        npz_done = (target.parent / f"{case.case_id}.npz").is_file() or not save_probabilities
        if resume and target.is_file() and npz_done:
            logger.debug(f"{target}: exists, skipped (--continue)")
        else:
            todo.append(case)
    workers = export_workers(workers, todo, predictors)
    start = time.perf_counter()
    with Exporter(workers) as exporter:
        for case in progress(todo, desc="predict", unit="case"):
            t0 = time.perf_counter()
            image, geometry = read_case(case)  # checked above, channels included
            target = target_of(case)
            npz = target.parent / f"{case.case_id}.npz" if save_probabilities else None
            t1 = time.perf_counter()
            members = [p.network_output(image, geometry) for p in predictors]
            logger.debug(f"{case.case_id}: read {t1 - t0:.1f} s, network {time.perf_counter() - t1:.1f} s")
            stats_image = image if statistics else None
            del image
            exporter.submit(
                ExportJob(case.case_id, members, geometry, target, npz, tuple(map(tuple, postprocessing)), stats_image,
                          source.scheme.written_names(), tuple(source.channel_names), scheme=source.scheme,
                          writer=seg_writer(case.series, source.scheme.written_names()) if dicom_seg else None)
            )  # fmt: skip
            del members, stats_image
        results = exporter.finish()
    for r in results:
        logger.debug(f"{r.case_id}: export {r.seconds:.1f} s")
    if results:
        took = time.perf_counter() - start
        logger.info(
            f"predicted {len(results)} case(s) in {took:.1f} s ({took / len(results):.2f} s/case, {workers} export "
            f"worker{'s' if workers != 1 else ''}) -> {out}"
        )
    if statistics:
        rows = {r.case_id: r.rows for r in results}
        write_folder_statistics(every, target_of, rows, source, (out.parent if single_file else out) / "statistics.csv")
    return [r.path for r in results]


def write_folder_statistics(cases, target_of, known: dict, source: ModelSource, path: Path) -> Path:
    """statistics.csv of every case in `cases` whose segmentation exists: rows from `known` (case id -> rows, the
    cases just predicted), the others computed from their segmentation file and input image (--continue, other
    --part shares). One row per case and foreground label, cases in input order; written atomically."""
    rows, n = [], 0
    for case in progress(cases, desc="statistics", unit="case"):
        if case.case_id in known:
            rows += known[case.case_id]
        elif target_of(case).is_file() and case.series is not None:
            names = source.scheme.written_names()
            rows += series_statistics(case.series, target_of(case), names, case.case_id, source.channel_names)
        elif target_of(case).is_file():
            rows += statistics_from_files(
                target_of(case), case.files, source.scheme.written_names(), case.case_id, source.channel_names
            )
        else:
            continue
        n += 1
    write_statistics_csv(rows, path)
    logger.info(f"statistics of {n} case(s) -> {path}")
    return path


def run_predict(
    ws: Workspace,
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
    workers: int | None = None,
    statistics: bool = False,
    backend: str = "auto",
    precision: str = "auto",
    force_modality: bool = False,
    output_type: str = "default",
) -> list[Path]:
    """`autoseg predict`: resolve the model (run folders or bundle), the configurations and folds, then predict.

    `fast`: the first trained fold only, no mirroring, step 0.75 (unless `folds` / `step` are given).
    `workers`: export processes (fewer when the largest case would not fit memory; None: `default_export_workers`);
    `statistics`: statistics.csv. `backend`: what runs the network forward ('auto': OpenVINO or ONNX Runtime on
    the CPU when installed, else torch; see autoseg.inference.backends.choice); `precision`: of that forward
    ('auto': fp16 on a GPU, fp32 on the CPU; see autoseg.inference.backends.precision).
    """
    share = parse_part(part)
    if output_type not in OUTPUT_TYPES:
        raise ConfigError(f"--output-type {output_type!r}: expected one of {', '.join(OUTPUT_TYPES)}")
    check_predict_options(workers, step)
    source = resolve_source(ws, dataset, model_dir, plans_name, trainer)
    configs, steps = choose_configurations(source, configuration, ensemble)
    if fast:
        tta = False
        step = 0.75 if step is None else step
    dev, backend, precision = resolve_engine(device, backend, precision)
    workers = default_export_workers(dev) if workers is None else workers
    predictors = []
    for c in configs:
        use = folds if folds is not None or not fast else [next(iter(source.weights[c]))]
        predictors.append(Predictor(source, c, use, dev, 0.5 if step is None else step, tta, backend=backend,
                                    precision=precision))  # fmt: skip
    share_previous_stages(predictors)
    logger.info(
        f"predicting with {source.dataset} {'+'.join(configs)} (folds {', '.join(map(str, predictors[0].folds))}), "
        f"TTA {'on' if tta else 'off'}, step {predictors[0].step}, device {dev}, backend {backend} {precision}, "
        "postprocessing " + ("; ".join("+".join(map(str, s)) for s in steps) if steps and postprocess else "none")
    )
    steps = steps if postprocess else ()
    return predict_folder(predictors, inp, out, steps, save_probabilities, share, resume, workers, statistics,
                          force_modality, output_type)  # fmt: skip


def share_previous_stages(predictors: Sequence[Predictor]) -> None:
    """A cascade stage whose previous stage is also an ensemble member, with the same folds, step and TTA, uses
    that member instead of its own copy: the previous stage then runs once per case, not twice."""
    for p in predictors:
        prev = p.configuration.previous_stage
        for q in predictors:
            if prev is not None and q is not p and _is_previous_stage_of(q, p):
                p.previous, q.memoize = q, True
                break


def _is_previous_stage_of(q: Predictor, p: Predictor) -> bool:
    """Whether `q` is what `p.previous` would build: the previous stage with all its folds, same step and TTA."""
    all_folds = tuple(q.source.weights.get(p.configuration.previous_stage, {}))
    return (q.configuration.name, q.folds, q.step, q.tta) == (p.configuration.previous_stage, all_folds, p.step, p.tta)


def default_export_workers(device: torch.device) -> int:
    """2 export processes beside a GPU or on a CPU with more than 4 cores; 1 (in-process) on small CPUs, where the
    network already uses every core and starting a pool costs more than the overlap gains."""
    return 2 if device.type == "cuda" or (os.cpu_count() or 1) > 4 else 1
