"""The cost-model registry: NAR-Former and any third party's through the ``narformer_tvm.cost_models``
entry-point group, MetaSchedule's built-ins by their own names."""
from __future__ import annotations

from narformer_tvm.integrations.tvm_env import meta_schedule

BUILTIN_COST_MODELS = ("xgb", "mlp", "random")


def list_cost_models() -> list[str]:
    from importlib.metadata import entry_points

    return sorted({ep.name for ep in entry_points(group="narformer_tvm.cost_models")} | set(BUILTIN_COST_MODELS))


def get_cost_model(name: str, **kwargs):
    """A cost model by name: registered ones ('narformer', entry-point group narformer_tvm.cost_models)
    or MetaSchedule's built-ins ('xgb', 'mlp', 'random'), like ``CostModel.create``."""
    from importlib.metadata import entry_points

    from narformer_tvm.errors import InputError

    eps = {ep.name: ep for ep in entry_points(group="narformer_tvm.cost_models")}
    if name in eps:
        return eps[name].load()(**kwargs)
    if name in BUILTIN_COST_MODELS:
        return meta_schedule().CostModel.create(name, **kwargs)
    raise InputError(f"unknown cost model {name!r}", hint=f"choose from: {', '.join(list_cost_models())}")
