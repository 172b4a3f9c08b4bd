"""Small parsing helpers shared by the command modules (fold lists, --set key=value)."""

from __future__ import annotations

import json

from autoseg.errors import ConfigError


def parse_folds(tokens: list[str] | str, n_folds: int = 5) -> list[int | str]:
    """'0..4' -> [0,1,2,3,4]; ['0','2','4'] -> [0,2,4]; 'all' -> ['all'] (train on every case)."""
    if isinstance(tokens, str):
        tokens = [tokens]
    out: list[int | str] = []
    for tok in " ".join(tokens).replace(",", " ").split():
        if tok == "all":
            out.append("all")
        elif ".." in tok:
            lo, _, hi = tok.partition("..")
            if not (lo.isdigit() and hi.isdigit()) or int(lo) > int(hi):
                raise ConfigError(f"fold range {tok!r} must look like 0..4")
            out.extend(range(int(lo), int(hi) + 1))
        elif tok.isdigit():
            out.append(int(tok))
        else:
            raise ConfigError(f"fold {tok!r} is not a number, a range like 0..4, or 'all'")
    if not out:
        raise ConfigError("no fold given; use e.g. -f 0..4, -f 0 2 4 or -f all")
    bad = [f for f in out if f != "all" and f >= n_folds]
    if bad:
        raise ConfigError(f"fold {bad[0]} does not exist: there are {n_folds} folds (0..{n_folds - 1})")
    return list(dict.fromkeys(out))


def parse_set(items: list[str]) -> dict[str, object]:
    """['epochs=100', 'lr=0.005'] -> {'epochs': 100, 'lr': 0.005}; values parsed as JSON, else kept as strings."""
    out: dict[str, object] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set epochs=100")
        try:
            value: object = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key.strip()] = value
    return out
