"""Formatting helpers for the planner's explanations and the CLI's plans table (no planning logic here)."""

from __future__ import annotations

from collections.abc import Sequence

from autoseg.planning.plans import Plans


def fmt(value: float) -> str:
    """A number as a short, readable string: 3.0 -> '3', 0.625 -> '0.625', 3.2559999 -> '3.256'."""
    v = float(value)
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return f"{v:.4g}"


def join_axes(names: Sequence[str], values: Sequence[float]) -> str:
    return ", ".join(f"{n} {fmt(v)}" for n, v in zip(names, values))


def axes_text(values: Sequence[float], names: Sequence[str] | None = None) -> str:
    """(3.6, 0.625, 0.625) -> '3.6 x 0.625 x 0.625' (names unused unless given: 'z 3.6, y 0.625, ...')."""
    if names is not None:
        return join_axes(names, values)
    return " x ".join(fmt(v) for v in values)


def plans_table(plans: Plans) -> str:
    """Compact table of a Plans' configurations (one line each) for the CLI."""
    head = ("configuration", "spacing", "median shape", "patch", "batch", "stages", "network", "data")
    rows = [head]
    for c in plans.configurations:
        rows.append(
            (
                c.name,
                axes_text(c.spacing),
                axes_text(c.median_shape),
                axes_text(c.patch_size),
                str(c.batch_size),
                str(c.network.params.get("n_stages", "?")),
                c.network.name,
                c.data_identifier,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows)
