"""A family's design space: its design variables, their values, and what builds a network from a sample."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

BATCHES = (1, 1, 1, 1, 1, 1, 2, 4)  # batch 1 mostly; repeated values weight the draw


RES_IMAGENET = (96, 128, 160, 192, 224)


@dataclass(frozen=True)
class Family:
    name: str
    builder: str  # key of families.BUILDERS, or "hf:<model type>" (hf_models.MODEL_TYPES)
    choices: dict[str, tuple]  # raw design variable -> allowed values
    make: Callable[[dict], dict]  # raw sample -> builder kwargs
    standard: dict[str, dict] = field(default_factory=dict)  # published networks as raw samples
    nnlqp: bool = True  # one of NNLQP's ten families

    def sample(self, rng: np.random.Generator) -> dict:
        return {k: v[int(rng.integers(len(v)))] for k, v in self.choices.items()}

    def contains(self, raw: dict) -> bool:
        return set(raw) == set(self.choices) and all(raw[k] in self.choices[k] for k in raw)
