"""Profile lookup for the compiler side: the pre-trained TVM cost model a profile ships."""
import json
from pathlib import Path

from narformer_tvm.measure.backends import MeasureConfig, fingerprint
from narformer_tvm.profiles import DEFAULT_PROFILES, list_profiles, shipped_cost_model


def _profile_here(tmp_path: Path, monkeypatch, **fields) -> Path:
    """Profiles named like every default one, for this machine's hardware unless ``fields`` say otherwise,
    shadowing the shipped ones (some ship a cost model); the folder of the first, which tune picks."""
    monkeypatch.setenv("NARFORMER_USER_DIR", str(tmp_path / "user"))
    monkeypatch.setenv("NARFORMER_PROFILES", str(tmp_path / "profiles"))
    shipped = json.loads((list_profiles()["cpu-onnxruntime"] / "profile.json").read_text())
    for name in DEFAULT_PROFILES:
        folder = tmp_path / "profiles" / name
        folder.mkdir(parents=True)
        meta = {**shipped, "fingerprint": fingerprint(MeasureConfig()), **fields}
        (folder / "profile.json").write_text(json.dumps(meta))
    return tmp_path / "profiles" / DEFAULT_PROFILES[0]


def test_tune_finds_the_cost_model_of_the_profile_for_this_machine_and_target(tmp_path, monkeypatch):
    folder = _profile_here(tmp_path, monkeypatch, tvm_cost_model="cost-model.pt")
    assert shipped_cost_model("llvm") is None  # named but not there
    (folder / "cost-model.pt").write_bytes(b"weights")
    assert shipped_cost_model("llvm") == folder / "cost-model.pt"
    assert shipped_cost_model("cuda") is None  # a CPU profile's model is no guide for a GPU


def test_no_cost_model_for_other_hardware_or_a_profile_without_one(tmp_path, monkeypatch):
    other = {**fingerprint(MeasureConfig()), "cpu": "Some Other CPU", "cpu_id": "GenuineIntel family 6 model 143"}
    folder = _profile_here(tmp_path, monkeypatch, tvm_cost_model="cost-model.pt", fingerprint=other)
    (folder / "cost-model.pt").write_bytes(b"weights")
    assert shipped_cost_model("llvm") is None
    meta = json.loads((folder / "profile.json").read_text())
    meta["fingerprint"] = fingerprint(MeasureConfig())
    del meta["tvm_cost_model"]
    (folder / "profile.json").write_text(json.dumps(meta))
    assert shipped_cost_model("llvm") is None
