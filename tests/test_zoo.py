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


@pytest.mark.parametrize("family", list(zoo.FAMILIES))
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


@pytest.mark.parametrize("family", list(zoo.FAMILIES))
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
