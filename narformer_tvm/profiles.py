"""The hardware-profile registry: where profiles live, which one fits this machine, what they name."""
from __future__ import annotations

import json
import os
from pathlib import Path

from narformer_tvm.errors import PredictorNotFoundError

# ONNX Runtime's default CPU configuration, one profile per CPU generation measured; `estimate` takes the
# one whose hardware matches this machine, else the first (and warns).
DEFAULT_PROFILES = ("cpu-onnxruntime", "cpu-onnxruntime-zen5")
DEFAULT_PROFILE = DEFAULT_PROFILES[0]


def user_profiles_dir() -> Path:
    """Where ``calibrate`` writes the user's own profiles: $NARFORMER_USER_DIR/profiles, else the
    platform's user data folder."""
    if os.environ.get("NARFORMER_USER_DIR"):
        return Path(os.environ["NARFORMER_USER_DIR"]) / "profiles"
    from platformdirs import user_data_dir

    return Path(user_data_dir("narformer-tvm", appauthor=False)) / "profiles"


def profile_dirs() -> list[Path]:
    """Where hardware profiles are looked up, first match wins: $NARFORMER_PROFILES, the user's own
    (calibrated) profiles, then the shipped ones."""
    dirs = []
    if os.environ.get("NARFORMER_PROFILES"):
        dirs += [Path(p) for p in os.environ["NARFORMER_PROFILES"].split(os.pathsep) if p]
    dirs.append(user_profiles_dir())
    dirs.append(Path(__file__).resolve().parent.parent / "profiles")  # source checkout / editable install
    dirs.append(Path(__file__).resolve().parent / "shipped_profiles")  # a wheel's package data
    return dirs


def list_profiles() -> dict[str, Path]:
    """Profile name -> its folder, for every folder holding a profile.json."""
    found: dict[str, Path] = {}
    for d in profile_dirs():
        if d.is_dir():
            for p in sorted(d.glob("*/profile.json")):
                found.setdefault(p.parent.name, p.parent)
    return found


def default_config_here() -> dict:
    """ONNX Runtime's default CPU configuration on this machine, as profile.json's ``config`` spells it."""
    from narformer_tvm.measure.hardware import physical_cores

    return {"runtime": "onnxruntime", "target": "llvm", "threads": physical_cores(), "opt_level": "all",
            "execution_mode": "sequential"}


def default_profile(include_user: bool = True) -> str:
    """The latest user profile calibrated on this machine for ONNX Runtime's default configuration
    (unless ``include_user`` is off), else the first of DEFAULT_PROFILES trained on hardware like this
    machine's, else the first installed."""
    profiles = list_profiles()
    user = user_profiles_dir()
    want = default_config_here() if include_user else {}
    mine = []
    for name, folder in profiles.items():
        if include_user and folder.parent == user:
            meta = json.loads((folder / "profile.json").read_text())
            cfg = meta.get("config") or {}
            if all(cfg.get(k) == v for k, v in want.items()) and meta.get("variant", "fp32") == "fp32" \
                    and meta.get("fingerprint") and not hardware_differences(meta["fingerprint"]):
                mine.append((meta.get("calibrated_at", ""), name))
    if mine:  # calibrating again under a new name means the new one
        return max(mine)[1]
    installed = [name for name in DEFAULT_PROFILES if name in profiles] or [DEFAULT_PROFILE]
    for name in installed:
        fp = json.loads((profiles[name] / "profile.json").read_text()).get("fingerprint")
        if fp and not hardware_differences(fp):
            return name
    return installed[0]


def _profile_file(spec: str | None, fields: tuple[str, ...], missing, default: str | None = None) -> Path:
    """The file ``spec`` names: a file, or the first existing one that a hardware profile's ``fields``
    name (``default`` where the last is absent; None = the default profile). ``missing(folder, name)``
    is the error when the profile has none of them."""
    spec = spec or (default_profile() if "predictor" in fields else DEFAULT_PROFILE)
    if Path(spec).is_file():
        return Path(spec)
    profiles = list_profiles()
    if spec in profiles:
        meta = json.loads((profiles[spec] / "profile.json").read_text())
        names = [meta.get(f) for f in fields[:-1]] + [meta.get(fields[-1], default)]
        for name in names:
            if name and (profiles[spec] / name).is_file():
                return profiles[spec] / name
        raise missing(profiles[spec], names[-1])
    names = ", ".join(profiles) or "none installed"
    raise PredictorNotFoundError(
        f"no predictor {spec!r}: not a file, and no hardware profile of that name (profiles: {names})",
        hint="train one on measured latencies (`narformer-tvm profile` then `narformer-tvm train --out "
             "predictor.pt`) and pass --predictor predictor.pt")


def resolve_predictor(spec: str | None, checkpoint: bool = False) -> Path:
    """A predictor file from ``--predictor`` (a file or a profile name; None = the default profile): the
    profile's ONNX export where it has one (it predicts without torch), else its torch checkpoint;
    with ``checkpoint``, always the torch checkpoint that training and fine-tuning need."""
    def missing(folder, name):
        hint = ("a wheel install ships the ONNX predictor only; training from a profile needs a source checkout"
                if checkpoint else "reinstall narformer-tvm or retrain the profile")
        return PredictorNotFoundError(f"profile {folder.name!r} names {folder / str(name)}, which does not exist",
                                      hint=hint)

    fields = ("predictor",) if checkpoint else ("onnx", "predictor")
    return _profile_file(spec, fields, missing, default="predictor.pt")


def profile_fields(spec: str | None, fields: tuple[str, ...]) -> dict:
    """Those fields of the profile.json that ``spec`` names (nothing for a file): a profile's own
    record of its dataset and labels outranks what its predictor files were saved with."""
    spec = spec or default_profile()
    profiles = list_profiles()
    if Path(spec).is_file() or spec not in profiles:
        return {}
    meta = json.loads((profiles[spec] / "profile.json").read_text())
    return {k: meta[k] for k in fields if k in meta}


def resolve_ort_predictor(spec: str | None) -> Path:
    """The predictor behind ``tune-ort``: a file, or a profile's ``ort_ratios`` (configuration ratios over
    its latency predictor) or else its ``ort_configs`` (a configuration-aware NAR-Former)."""
    return _profile_file(spec, ("ort_ratios", "ort_configs"), lambda folder, name: PredictorNotFoundError(
        f"hardware profile {folder.name!r} has no configuration-aware predictor for tune-ort",
        hint="collect data with `narformer-tvm profile --zoo all --ort-candidates 3 --db D` and train it with "
             f"`narformer-tvm train --task ort-configs --db D --out P --profile-dir {folder}`"))


def load_ort_predictor(spec: str | None):
    """What ``resolve_ort_predictor`` names, loaded: a ratio model (.json) over the latency predictor of
    its profile (or of the default profile, for a bare file), or a configuration-aware NAR-Former."""
    path = resolve_ort_predictor(spec)
    if path.suffix == ".json":
        from narformer_tvm.integrations.ort_config_ratio import RatioModel, RatioPredictor

        profile = path.parent.name if path.parent.name in list_profiles() else None
        return RatioPredictor(RatioModel.load(path), load_profile_predictor(profile))
    from narformer_tvm.model.predictor import Predictor

    return Predictor.load(path)


# profile.json fields naming further files
EXTRA_PREDICTORS = ("ort_configs", "ort_ratios", "tvm_cost_model", "tvm_task_latency")


def shipped_cost_model(target: str = "llvm", field: str = "tvm_cost_model") -> Path | None:
    """The pre-trained TVM cost model (``tunedb pretrain``; or with ``field="tvm_task_latency"`` the
    task-latency model of ``tunedb task-latency``) of the profile that fits this machine, when that
    profile ships one for ``target``; None otherwise (tuning then learns from scratch)."""
    profiles = list_profiles()
    name = default_profile()
    meta = json.loads((profiles[name] / "profile.json").read_text())
    file = meta.get(field)
    fp = meta.get("fingerprint")
    if not file or meta.get("target", "llvm") != target or (fp and hardware_differences(fp)):
        return None
    path = profiles[name] / file
    return path if path.is_file() else None


def hardware_differences(fp: dict, here: dict | None = None) -> list[str]:
    """How this machine (or the one fingerprint ``here`` describes) differs from the one ``fp`` describes
    (keys ``fp`` lacks are not compared)."""
    from narformer_tvm.measure.hardware import HARDWARE_KEYS, gpu_name, hardware

    if here is not None:
        here = {k: here.get(k) for k in (*HARDWARE_KEYS, "gpu") if k in HARDWARE_KEYS or k in fp}
    else:
        here = hardware()
        if "gpu" in fp:
            here["gpu"] = gpu_name()
    return [f"{k}: trained on {fp[k]!r}, this machine {v!r}" for k, v in here.items() if fp.get(k) not in (None, v)]


def load_profile_predictor(spec: str | None):
    """The latency predictor ``spec`` names, ready to predict: a file, or a profile's predictor with the
    profile's calibration applied and its profile.json's hardware and configuration (a calibrated user
    profile describes this machine, not the base predictor's)."""
    from narformer_tvm.model.load import load_predictor

    predictor = load_predictor(resolve_predictor(spec))
    fields = profile_fields(spec, ("calibration", "fingerprint", "config", "name", "variant"))
    if fields.get("calibration"):
        from narformer_tvm.model.calibrated import CalibratedPredictor

        predictor = CalibratedPredictor(predictor, fields["calibration"])
        predictor.profile = {**predictor.profile, **{k: fields[k] for k in ("fingerprint", "config", "name", "variant")
                                                      if k in fields}}
    return predictor


def config_mismatch(predictor) -> str | None:
    """A note when the predictor describes another ONNX Runtime configuration than the default one here
    (threads, optimisation level, execution mode, target): its latencies are for that configuration."""
    cfg = predictor.profile.get("config") or {}
    want = {k: v for k, v in default_config_here().items() if k != "runtime"}
    diffs = [f"{k} {cfg[k]} (default here: {v})" for k, v in want.items() if k in cfg and cfg[k] != v]
    if predictor.profile.get("variant", "fp32") != "fp32":
        diffs.append(f"models made {predictor.profile['variant']} (give it such a model, e.g. from `tune-ort --allow-lossy`)")
    if not diffs or cfg.get("runtime", "onnxruntime") != "onnxruntime":
        return None
    return (f"predictor {predictor.profile.get('name', '')!r} describes ONNX Runtime with {', '.join(diffs)}: "
            "its latencies are for that configuration")


def fingerprint_mismatch(predictor) -> str | None:
    """A warning when this machine differs from the one the predictor's training data came from."""
    fp = predictor.profile.get("fingerprint")
    diffs = hardware_differences(fp) if fp else []
    if not diffs:
        return None
    cfg = predictor.profile.get("config") or {}
    how = "".join(f" --{k} {cfg[k]}" for k, default in (("target", "llvm"), ("runtime", "onnxruntime"))
                  if cfg.get(k, default) != default)
    return (f"predictor {predictor.profile.get('name', '')!r} was trained for other hardware ({'; '.join(diffs)}); "
            f"latencies are for that hardware, not this machine (`narformer-tvm calibrate{how} --budget 10m` adapts "
            "it to this one: 10 minutes of profiling, then up to 10 of training)")
