"""Random hyper-parameter search, DomainBed style: ``hparams_seed=0`` is the defaults; seed k > 0 draws each
hyper-parameter from its range with an RNG seeded by (k, method, hyper-parameter name) only.

Seeding per name means adding a method, or a hyper-parameter to another method, never changes any other
draw, so old sweep results stay comparable. Ranges live beside the defaults, in the ``search:`` mapping
of ``configs/method/<name>.yaml``::

    search:
      trade_off: [log_uniform, 0.1, 10.0]
      grl_alpha: [choice, [1.0, 5.0, 10.0]]

A Hydra multirun drives the sweep: ``dacl run -m method=dann,cdan hparams_seed=0,1,2,3,4 seed=0,1,2``.
"""
from __future__ import annotations

import hashlib
import math
from typing import Any, Mapping, Sequence

import numpy as np

from dacl.errors import ConfigError

DISTRIBUTIONS = ("uniform", "log_uniform", "int_uniform", "choice")


def seed_hash(*parts: Any) -> int:
    """A stable 31-bit seed from any printable parts (Python's hash() is salted per process)."""
    return int(hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


def draw(spec: Sequence[Any], rng: np.random.RandomState, where: str) -> Any:
    kind, *args = spec
    if kind == "uniform":
        return float(rng.uniform(*args))
    if kind == "log_uniform":
        lo, hi = args
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    if kind == "int_uniform":
        lo, hi = args
        return int(rng.randint(lo, hi + 1))
    if kind == "choice":
        options = list(args[0])
        return options[rng.randint(len(options))]
    raise ConfigError(f"{where}: unknown distribution '{kind}'; use one of {', '.join(DISTRIBUTIONS)}")


def sample_hparams(method: str, search: Mapping[str, Sequence[Any]], hparams_seed: int) -> dict[str, Any]:
    """The hyper-parameters trial ``hparams_seed`` uses ({} for seed 0: the defaults)."""
    if hparams_seed == 0:
        return {}
    return {name: draw(spec, np.random.RandomState(seed_hash(hparams_seed, method, name)), f"{method}.search.{name}")
            for name, spec in search.items()}
