import json
from pathlib import Path

from narformer_tvm.graph.tokens import FeatureConfig
from narformer_tvm.learn.samples import dataset_path
from narformer_tvm.model.load import load_predictor
from narformer_tvm.model.predictor import new_predictor
from narformer_tvm.profiles import list_profiles


def test_a_profile_json_outranks_the_dataset_a_checkpoint_was_saved_with(tmp_path):
    p = new_predictor(FeatureConfig(n_freqs=4), d_model=32, n_groups=4)
    p.profile = {"name": "t", "dataset": "moved/away/dataset.db", "labels": "old"}
    p.save(tmp_path / "predictor.pt")
    p.save(tmp_path / "other.pt")
    (tmp_path / "profile.json").write_text(json.dumps(
        {"predictor": "predictor.pt", "dataset": "profiles/x/train", "labels": "new"}))
    named = load_predictor(tmp_path / "predictor.pt").profile
    assert named == {"name": "t", "dataset": "profiles/x/train", "labels": "new"}
    # a file the profile does not name is not its predictor: it keeps its own record
    assert load_predictor(tmp_path / "other.pt").profile["dataset"] == "moved/away/dataset.db"


def test_every_shipped_predictor_finds_the_data_it_trained_on():
    # "never trained on" filters (evaluate --predictor, published metrics) drop nothing without it
    for name, folder in list_profiles().items():
        meta = json.loads((folder / "profile.json").read_text())
        if "dataset" not in meta or not (Path(folder) / meta["predictor"]).exists():
            continue
        profile = load_predictor(folder / meta.get("onnx", meta["predictor"])).profile
        assert dataset_path(profile["dataset"]), f"{name}: the training dataset of its predictor is not found"
