import numpy as np
import onnx
import pytest

from narformer_tvm.errors import InputError
from narformer_tvm.graph.onnx_graph import build_graph
from narformer_tvm.measure import zoo


def test_ten_nnlqp_families_plus_two_others():
    assert len(zoo.family_names("nnlqp")) == 10
    others = set(zoo.family_names("all")) - set(zoo.family_names("nnlqp"))
    assert others == {"vit", "convnext"}
    with pytest.raises(InputError, match="unknown family"):
        zoo.family_names("resnet,bogus")


@pytest.mark.parametrize("family", list(zoo.ZOO))
def test_variants_are_reproducible_distinct_and_valid(family, tmp_path):
    first = list(zoo.variants(family, seed=3, count=25))
    again = list(zoo.variants(family, seed=3, count=25))
    assert [v.raw for v in first] == [v.raw for v in again]
    assert len({v.key for v in first}) == 25
    assert zoo.variant(family, 3, 7) == first[7]
    assert all(zoo.FAMILIES[family].contains(v.raw) for v in first)
    v = first[0]
    path = v.export(tmp_path / "v.onnx")
    onnx.checker.check_model(onnx.load(path))
    g = build_graph(path)
    assert g.batch_size == v.raw["batch"] and len(g.nodes) > 3


def test_published_networks_lie_inside_the_sampled_spaces():
    from narformer_tvm.measure import families

    names = zoo.standard_names()
    for name in ("resnet18", "resnet50", "vgg16", "mobilenet_v2", "efficientnet_b0", "mobilenet_v3_large",
                 "squeezenet1_1", "googlenet", "mnasnet1_0", "alexnet", "vit_b_16", "convnext_tiny"):
        v = names[name]
        assert zoo.FAMILIES[v.family].contains(v.raw), name
        fam, params, res = families.STANDARD[name]
        ours = sum(p.numel() for p in v.build().parameters())
        ref = sum(p.numel() for p in families.build(fam, **params).parameters())
        assert ours == ref and v.raw["resolution"] == res, name


def test_zoo_cli_writes_files_and_manifest_and_resumes(tmp_path, capsys):
    from narformer_tvm.cli.main import main

    for _ in range(2):
        with pytest.raises(SystemExit) as exc:
            main(["zoo", "--family", "squeezenet,nb201", "--count", "2", "--out", str(tmp_path)])
        assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "0 new models" in out.splitlines()[-1]
    files = sorted(p.name for p in tmp_path.glob("*.onnx"))
    assert files == ["nb201-s0-00000.onnx", "nb201-s0-00001.onnx", "squeezenet-s0-00000.onnx", "squeezenet-s0-00001.onnx"]
    assert len((tmp_path / "manifest.jsonl").read_text().splitlines()) == 4


@pytest.mark.parametrize("family", list(zoo.ZOO))
def test_variants_differ_as_graphs(family, tmp_path):
    """Distinct samples that build the same network (a design variable without effect) would put one
    graph on both sides of a split."""
    from narformer_tvm.graph.tokens import table

    digests = {table(build_graph(v.export(tmp_path / f"{v.index}.onnx"))).digest()
               for v in zoo.variants(family, seed=0, count=6)}
    assert len(digests) == 6


def test_alexnet_variants_sampled_before_mid_width_rebuild_as_measured():
    old = zoo.Variant("alexnet", 0, 0, {"width": 64, "mid": 0.5, "fc": 4096, "resolution": 224, "batch": 1})
    assert old.kwargs() == zoo.standard_names()["alexnet"].kwargs()  # "mid" never changed the network
    new = zoo.Variant("alexnet", 0, 0, {"width": 64, "mid_width": 0.5, "fc": 4096, "resolution": 224, "batch": 1})
    assert new.kwargs()["widths"] == (64, 96, 192, 128, 128)


def test_family_groups_combine_and_unknown_names_list_the_valid_ones():
    assert zoo.family_names("corpus") == list(zoo.CORPUS) and len(zoo.CORPUS) >= 15
    assert zoo.family_names("resnet,corpus,resnet")[0] == "resnet" and len(zoo.family_names("all,corpus")) == 12 + len(
        zoo.CORPUS)
    with pytest.raises(InputError, match="corpus"):
        zoo.family_names("bertt")


@pytest.mark.parametrize("family", list(zoo.CORPUS))
def test_corpus_families_sample_valid_configurations_of_real_architectures(family):
    variants = list(zoo.variants(family, seed=0, count=20))
    assert len({v.arch_key for v in variants}) == 20
    assert all(zoo.FAMILIES[family].contains(v.raw) for v in variants)
    for name, v in zoo.standard_names(zoo.CORPUS).items():
        assert zoo.FAMILIES[v.family].contains(v.raw), name


@pytest.mark.slow
@pytest.mark.parametrize("family", list(zoo.CORPUS))
def test_corpus_variants_export_and_count_their_compute(family, tmp_path):
    """The first variant of each real-architecture family: exported, analysed, its MACs those torch counts."""
    pytest.importorskip("transformers")
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from narformer_tvm.graph.tokens import unknown_ops
    from narformer_tvm.measure import hf_models

    v = zoo.variant(family, 0, 0)
    g = build_graph(v.export(tmp_path / "v.onnx"))
    module = v.build()
    x = hf_models.example_input(v._hf_type, v.raw["batch"], v.raw.get("seq") or v.raw["resolution"])
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(x)
    assert g.macs == pytest.approx(counter.get_total_flops() // 2, rel=0.02) and g.macs > 0
    assert g.batch_size == v.raw["batch"] and not unknown_ops(g)


def test_random_weight_exports_keep_their_activations_out_of_denormal_range(tmp_path):
    """MobileViT with random weights and untrained BatchNorm statistics shrinks its activations to denormal
    floats, which Intel CPUs run tens of times slower; exports settle the statistics first."""
    pytest.importorskip("transformers")
    import onnxruntime as ort

    from narformer_tvm.measure import hf_models

    path = hf_models.export("mobilevit", {"image_size": 64}, tmp_path / "m.onnx", 1, 64)
    x = hf_models.example_input("mobilevit", 1, 64).numpy()
    (y,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    assert 0.1 < float(np.std(y)) < 10 and not np.any((y != 0) & (np.abs(y) < np.finfo(np.float32).tiny))

    module = hf_models.build("mobilevit", {"image_size": 64})
    assert hf_models.settle_batch_norms(module, hf_models.example_input("mobilevit", 1, 64)) > 10
    assert hf_models.settle_batch_norms(hf_models.build("bert", {"num_hidden_layers": 1}), None) == 0
