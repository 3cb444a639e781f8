"""Train/test splits: same-distribution, leave-one-family-out, random; validation carved from training."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from narformer_tvm.errors import InputError
from narformer_tvm.learn.samples import Sample


def split_same_distribution(samples: Sequence[Sample], test_frac: float = 0.1) -> tuple[list[int], list[int]]:
    """Per family, the last ``test_frac`` of the models (in generation order) are the test set
    (NNLQP's Table 1 protocol). Imported rows with a split tag keep it."""
    train, test = [], []
    by_family: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        if s.split in ("train", "test"):
            (train if s.split == "train" else test).append(i)
        else:
            by_family.setdefault(s.family, []).append(i)
    for idx in by_family.values():
        idx = sorted(idx, key=lambda i: samples[i].model_id)
        k = max(1, int(round(test_frac * len(idx)))) if len(idx) > 1 else 0
        train += idx[:len(idx) - k]
        test += idx[len(idx) - k:]
    return sorted(train), sorted(test)


def split_leave_one_family_out(samples: Sequence[Sample], family: str) -> tuple[list[int], list[int]]:
    train = [i for i, s in enumerate(samples) if s.family != family]
    test = [i for i, s in enumerate(samples) if s.family == family]
    if not test:
        raise InputError(f"no samples of family {family!r}")
    return train, test


def split_random(samples: Sequence[Sample], test_frac: float = 0.1, seed: int = 0) -> tuple[list[int], list[int]]:
    order = np.random.default_rng(seed).permutation(len(samples))
    k = int(round(test_frac * len(samples)))
    return sorted(order[k:].tolist()), sorted(order[:k].tolist())


def carve_validation(train: Sequence[int], frac: float = 0.1, seed: int = 0) -> tuple[list[int], list[int]]:
    """Hold out part of the training indices for early stopping (the test split is never used)."""
    order = np.random.default_rng(seed + 1000).permutation(len(train))
    k = max(1, int(round(frac * len(train)))) if len(train) > 4 else 0
    val = sorted(train[i] for i in order[:k])
    return sorted(set(train) - set(val)), val
