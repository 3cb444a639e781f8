"""Any MetaSchedule cost model with its predict and update time summed, so that every tuning report
gives the cost model's share of tuning time (NAR-Former's keeps its own ``seconds``)."""
from __future__ import annotations

import time

from tvm.ir.utils import derived_object

from narformer_tvm.integrations.tvm_env import meta_schedule

ms = meta_schedule()  # this module is imported only where TVM is used


@derived_object
class TimedCostModel(ms.cost_model.PyCostModel):
    """``inner`` (a built-in such as XGBoost, or any cost model) unchanged; ``seconds`` holds the time of
    its predict and update calls."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.seconds = {"predict": 0.0, "update": 0.0}

    def load(self, path: str) -> None:
        self.inner.load(path)

    def save(self, path: str) -> None:
        self.inner.save(path)

    def update(self, context, candidates, results) -> None:
        t0 = time.perf_counter()
        try:
            self.inner.update(context, candidates, results)
        finally:
            self.seconds["update"] += time.perf_counter() - t0

    def predict(self, context, candidates):
        t0 = time.perf_counter()
        try:
            return self.inner.predict(context, candidates)
        finally:
            self.seconds["predict"] += time.perf_counter() - t0
