"""Which configurations a prediction uses, and whether the selection's postprocessing applies to them."""

from __future__ import annotations

from autoseg.errors import ConfigError
from autoseg.inference.source import ModelSource
from autoseg.log import logger


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
