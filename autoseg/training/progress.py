"""Per-epoch records and their three views in the run folder: log.txt, progress.csv and progress.png.

The curves (a dict of lists) live in every checkpoint, so after a resume the files are rewritten complete.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass

from autoseg.serialization import atomic_write_bytes, atomic_write_text
from autoseg.workspace import RunFolder

CURVE_KEYS = ("epoch", "train_loss", "val_loss", "dice", "ema_dice", "lr", "seconds", "data_seconds")


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    train_loss: float
    val_loss: float
    dice: tuple[float, ...]  # pseudo-Dice per foreground label
    ema_dice: float
    lr: float
    seconds: float
    data_seconds: float  # of `seconds`, time spent waiting for batches


def empty_curves() -> dict[str, list]:
    return {k: [] for k in CURVE_KEYS}


def append(curves: dict[str, list], rec: EpochRecord) -> None:
    for key, value in asdict(rec).items():
        curves[key].append(list(value) if isinstance(value, tuple) else value)


def records(curves: dict[str, list]) -> list[EpochRecord]:
    n = len(curves["epoch"])
    return [
        EpochRecord(**{k: (tuple(curves[k][i]) if k == "dice" else curves[k][i]) for k in CURVE_KEYS}) for i in range(n)
    ]


def truncate(curves: dict[str, list], n_epochs: int) -> dict[str, list]:
    return {k: list(v[:n_epochs]) for k, v in curves.items()}


def format_line(rec: EpochRecord, labels: tuple[int, ...]) -> str:
    dice = " ".join(f"{lab}:{d:.4f}" for lab, d in zip(labels, rec.dice))
    return (
        f"epoch {rec.epoch:4d}  train_loss {rec.train_loss:.4f}  val_loss {rec.val_loss:.4f}  "
        f"pseudo_dice [{dice}]  ema {rec.ema_dice:.4f}  lr {rec.lr:.6f}  "
        f"{rec.seconds:.1f}s  data_wait {rec.data_seconds:.1f}s"
    )


def write_files(run: RunFolder, curves: dict[str, list], labels: tuple[int, ...], header: str = "") -> None:
    """Rewrite the run's log.txt, progress.csv and progress.png from the curves."""
    recs = records(curves)
    lines = [header] if header else []
    lines += [format_line(r, labels) for r in recs]
    atomic_write_text(run.log, "\n".join(lines) + "\n")
    cols = [
        "epoch",
        "train_loss",
        "val_loss",
        *[f"dice_{lab}" for lab in labels],
        "ema_dice",
        "lr",
        "seconds",
        "data_seconds",
    ]
    rows = [",".join(cols)]
    for r in recs:
        vals = [r.epoch, r.train_loss, r.val_loss, *r.dice, r.ema_dice, r.lr, r.seconds, r.data_seconds]
        rows.append(",".join(str(v) if isinstance(v, int) else f"{v:.6g}" for v in vals))
    atomic_write_text(run.progress_csv, "\n".join(rows) + "\n")
    atomic_write_bytes(run.progress_plot, plot_png(recs, labels))


def plot_png(recs: list[EpochRecord], labels: tuple[int, ...]) -> bytes:
    """Three panels: losses with pseudo-Dice and EMA; epoch time with data wait; learning rate."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 11))
    FigureCanvasAgg(fig)
    ax1, ax3, ax4 = fig.subplots(3, 1)
    ep = [r.epoch for r in recs]
    ax1.plot(ep, [r.train_loss for r in recs], color="b", label="train loss")
    ax1.plot(ep, [r.val_loss for r in recs], color="r", label="val loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax2 = ax1.twinx()
    for i, lab in enumerate(labels):
        ax2.plot(ep, [r.dice[i] for r in recs], ls=":", label=f"pseudo Dice {lab}")
    ax2.plot(ep, [r.ema_dice for r in recs], color="g", label="EMA pseudo Dice")
    ax2.set_ylabel("pseudo Dice")
    ax1.legend(loc="upper left")
    ax2.legend(loc="lower right")
    ax3.plot(ep, [r.seconds for r in recs], color="b", label="epoch seconds")
    ax3.plot(ep, [r.data_seconds for r in recs], color="r", label="waiting for data")
    ax3.set_ylabel("seconds")
    ax3.legend(loc="upper left")
    ax4.plot(ep, [r.lr for r in recs], color="b", label="learning rate")
    ax4.set_xlabel("epoch")
    ax4.set_ylabel("lr")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()
