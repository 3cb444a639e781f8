"""Options shared by several commands."""
from __future__ import annotations

import click

input_shape_option = click.option(
    "--input-shape", "input_shapes", multiple=True, metavar="NAME=DIMS",
    help="Fix a dynamic input shape, e.g. input=1x3x224x224 (repeatable).")


batch_option = click.option("--batch-size", type=click.IntRange(min=1), default=None,
                            help="Batch size for a symbolic leading input dimension (default 1).")


variant_option = click.option(
    "--variant", type=click.Choice(["fp32", "int8-qdq", "int8-dynamic", "int8-dynamic-matmul", "fp16"]),
    default="fp32", show_default=True,
    help="Measure this version of every model, made by ONNX Runtime's own tools (static QDQ or dynamic int8 "
         "quantisation, fp16) before measuring: a configuration of its own.")


opt_level_option = click.option(
    "--opt-level", type=click.Choice(["disabled", "basic", "extended", "all"]), default="all", show_default=True,
    help="ONNX Runtime graph optimisation level.")


class SeedList(click.ParamType):
    """A seed count N -> [0, ..., N-1]; or seeds listed and ranged, "1,3" or "3-4" -> those seeds.
    With ``count=False`` a lone number is that one index (ensemble members: "2" -> [2])."""

    name = "N|SEEDS"

    def __init__(self, count: bool = True):
        self.count = count
        if not count:
            self.name = "INDICES"

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        text = str(value).replace(" ", "")
        try:
            if self.count and text.isdigit():
                if int(text) < 1:
                    raise ValueError
                return list(range(int(text)))
            seeds = []
            for part in text.split(","):
                lo, dash, hi = part.partition("-")
                lo, hi = int(lo), int(hi) if dash else int(lo)
                if lo < 0 or hi < lo:
                    raise ValueError
                seeds += [s for s in range(lo, hi + 1) if s not in seeds]
            return seeds
        except ValueError:
            if not self.count:
                self.fail(f"{value!r} is not a list or range of indices (2, 0,2 or 1-2)", param, ctx)
            self.fail(f"{value!r} is neither a seed count (5) nor a list or range of seeds (1,3 or 3-4; "
                      "one seed alone: 2-2)", param, ctx)


def model_options(f):
    opts = [
        click.option("--d-model", type=click.IntRange(min=8), default=None, help="Hidden width (default 512)."),
        click.option("--layers", type=click.IntRange(min=1), default=None, help="Blocks (default 2)."),
        click.option("--groups", type=click.IntRange(min=1), default=None, help="GFFN groups (default 8)."),
        click.option("--backbone", type=click.Choice(["transformer", "gnn"]), default=None),
        click.option("--readout", type=click.Choice(["sum", "node_cost", "flops_mac", "roofline", "by_kind"]), default=None,
                     help="sum: the paper's sum of node embeddings -> head; node_cost: sum of per-operator costs; "
                          "flops_mac: corrects a FLOPs + memory-access line; roofline: that line per operator; "
                          "by_kind: corrects a line with FLOPs and bytes rates per operator kind."),
        click.option("--no-graph-attention", is_flag=True, help="Ablation: plain self-attention."),
        click.option("--no-gffn", is_flag=True, help="Ablation: plain feed-forward network."),
        click.option("--no-type-enhance", is_flag=True, help="Ablation: no degree gate."),
        click.option("--op-encoding", type=click.Choice(["onehot", "sinusoidal"]), default=None),
        click.option("--attr-encoding", type=click.Choice(["sinusoidal", "raw"]), default=None),
        # Defaults differ per task (latency: FitConfig, accuracy: AccuracyOptions): None = the task's own.
        click.option("--epochs", type=click.IntRange(min=1), default=None,
                     help="Maximum epochs (latency default 100, accuracy 300)."),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="Peak learning rate (latency default 1e-3, accuracy 1e-4)."),
        click.option("--batch-size", "train_batch", type=click.IntRange(min=1), default=None, help="Default 32."),
        click.option("--patience", type=click.IntRange(min=1), default=None,
                     help="Early stopping: epochs without validation improvement (latency default 15, accuracy 60)."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--include-noisy", is_flag=True, help="Also use measurements flagged noisy (left out by default)."),
        click.option("--regime-correction/--no-regime-correction", default=None,
                     help="Divide each gated label by how much slower than the fast regime the probes around it "
                          "ran (dataset.regime_factor; the default), or train and score on the raw latencies. "
                          "evaluate --predictor: default, the labels that predictor learned."),
        click.option("--sitting-level/--no-sitting-level", default=None,
                     help="With the regime correction, take each sitting's whole level out in full "
                          "(dataset.sitting_factor: the sitting's median probe over the typical one, then the "
                          "row's probe within its sitting to the usual power), for sittings that ran off the "
                          "usual level. evaluate --predictor: default, the labels that predictor learned."),
        click.option("--mean-passes/--main-pass-only", default=None,
                     help="Label a model measured more than once (clean repeat-pass rows besides its main one) by "
                          "the geometric mean of its passes, or by its main pass alone (train's default). evaluate "
                          "--predictor: default, the labels that predictor learned."),
        click.option("--loss", type=click.Choice(["relative", "log"]), default="relative", show_default=True,
                     help="relative: |pred - y| / y (MAPE); log: squared error of log latencies."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def regime_correct_from(kw: dict, learned: bool | str = True) -> bool | str:
    """load_samples' ``regime_correct`` from --regime-correction and --sitting-level; where neither is
    given, ``learned`` (what a scored predictor learned; train's default: the regime correction)."""
    on, sitting = kw["regime_correction"], kw["sitting_level"]
    if on is False:
        if sitting:
            raise click.UsageError("--sitting-level refines the regime correction: drop --no-regime-correction")
        return False
    if on is None and sitting is None:
        return learned
    return "sitting" if (learned == "sitting" if sitting is None else sitting) else True


def parse_train_options(kw) -> tuple:
    from narformer_tvm.learn.train import FitConfig

    for name, flag, _ in CELL_ONLY:
        if kw.get(name) is not None:
            raise click.UsageError(f"{flag} applies to the accuracy task (cell training) only")
    model = {k: v for k, v in (("d_model", kw["d_model"]), ("n_layers", kw["layers"]), ("n_groups", kw["groups"]),
                                ("backbone", kw["backbone"]), ("readout", kw["readout"])) if v is not None}
    if kw["no_graph_attention"]:
        model["graph_attention"] = False
    if kw["no_gffn"]:
        model["gffn"] = False
    if kw["no_type_enhance"]:
        model["type_enhance"] = False
    feats = {k: v for k, v in (("op_encoding", kw["op_encoding"]), ("attr_encoding", kw["attr_encoding"])) if v}
    fit = FitConfig(**given_options(kw), seed=kw["seed"], loss=kw["loss"])
    return model, feats, fit


def given_options(kw) -> dict:
    """The training-loop options set on the command line (the others keep the task's defaults)."""
    names = {"epochs": "epochs", "lr": "lr", "train_batch": "batch_size", "patience": "patience"}
    return {field: kw[opt] for opt, field in names.items() if kw[opt] is not None}


task_options = [
    click.option("--task", type=click.Choice(["latency", "accuracy", "ort-configs"]), default="latency",
                 show_default=True, help="latency: whole networks; accuracy: NAS cells; ort-configs: the "
                 "configuration-aware predictor behind `tune-ort`."),
    click.option("--benchmark", type=click.Choice(["nb201", "nb101"]), default=None,
                 help="accuracy task: the cell benchmark."),
    click.option("--data", "data_path", type=click.Path(dir_okay=False, path_type=str), default=None,
                 help="accuracy task: ../shared/data/nasbench201_accuracy.csv or nasbench101_1k.json."),
    click.option("--train-size", type=click.IntRange(min=2), default=None,
                 help="accuracy task: training cells (NB201: 781 = 5%, 1563 = 10%; NB101 subset: 100, 424)."),
    click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default=None,
                 help="accuracy task: training matmuls in bf16 (default auto: where the CPU has native bf16)."),
    click.option("--ema", type=click.FloatRange(0, 1, max_open=True), default=None,
                 help="accuracy task: validate and keep a moving average of the weights with this decay (0: off)."),
    click.option("--layer-fusion/--no-layer-fusion", default=None,
                 help="accuracy task: weight each block's readout by a learned gate (the paper's fusion, the "
                      "default) or sum them."),
    click.option("--block", type=click.Choice(["prenorm", "l2"]), default=None,
                 help="accuracy task: l2 (default): the reference code's block, the attention output L2-normalised "
                      "and ReLU'd, no attention residual; prenorm: residual attention and GFFN after LayerNorm."),
    click.option("--loss-form", type=click.Choice(["logistic", "reference"]), default=None,
                 help="accuracy task: logistic (default): logistic pairwise loss, squared relative consistency "
                      "gap; reference: the reference code's L1 of shuffled-pair differences and L1 consistency gap."),
    click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=None,
                 help="accuracy task: dropout rate in every block (default 0.1; the reference code's 0.05)."),
    click.option("--n-freqs", type=click.IntRange(min=1), default=None,
                 help="accuracy task: frequencies of the sinusoidal node-position code (default 16)."),
    click.option("--gffn-norm/--no-gffn-norm", default=None,
                 help="accuracy task: the reference code's GFFN, a LayerNorm per group after each group linear "
                      "layer and ReLU between them (default: off, GELU)."),
    click.option("--enhance-first/--no-enhance-first", default=None,
                 help="accuracy task: the reference code's order, the degree gate (type-aware enhancement) on "
                      "each block's input rather than its output (default: output)."),
    click.option("--readout-norm/--no-readout-norm", default=None,
                 help="accuracy task: LayerNorm each node before summing a block's readout (default), or take "
                      "the mean of the raw node embeddings, as the reference code does."),
    click.option("--head", type=click.Choice(["gelu", "reference"]), default=None,
                 help="accuracy task: reference (default): the reference code's two hidden layers of the model "
                      "width, ReLU and dropout 0.05; gelu: one hidden layer of width/2, GELU."),
    click.option("--rank-weight", type=click.FloatRange(min=0), default=None,
                 help="accuracy task: weight of the pairwise term (default 1; the reference code's 0.1)."),
    click.option("--consistency-weight", type=click.FloatRange(min=0), default=None,
                 help="accuracy task: weight of the isomorphism-consistency term (default 0.1; the reference's 0.5)."),
]


# (click parameter, flag as shown, AccuracyOptions field) of the task options that only cell training reads
CELL_ONLY = (("precision", "--precision", "precision"), ("ema", "--ema", "ema"),
             ("layer_fusion", "--layer-fusion/--no-layer-fusion", "fusion"), ("block", "--block", "block"),
             ("loss_form", "--loss-form", "loss_form"), ("rank_weight", "--rank-weight", "rank_weight"),
             ("consistency_weight", "--consistency-weight", "consistency_weight"), ("dropout", "--dropout", "dropout"),
             ("n_freqs", "--n-freqs", "n_freqs"), ("gffn_norm", "--gffn-norm/--no-gffn-norm", "gffn_norm"),
             ("enhance_first", "--enhance-first/--no-enhance-first", "enhance_first"),
             ("readout_norm", "--readout-norm/--no-readout-norm", "readout_norm"), ("head", "--head", "head"))


def task_option_set(f):
    for o in reversed(task_options):
        f = o(f)
    return f


def accuracy_args(db_path, benchmark, data_path, train_size):
    if db_path:
        raise click.UsageError("--db is for the latency task; the accuracy task reads --data")
    if not (benchmark and data_path and train_size):
        raise click.UsageError("the accuracy task needs --benchmark, --data and --train-size")


def accuracy_options(kw):
    from narformer_tvm.learn.nas import AccuracyOptions, resolved

    o = {k: v for k, v in (("d_model", kw["d_model"]), ("n_layers", kw["layers"]), ("n_groups", kw["groups"]),
                            ("backbone", kw["backbone"])) if v is not None}
    o.update({field: kw[name] for name, _, field in CELL_ONLY if kw[name] is not None})
    return resolved(AccuracyOptions(**o, **given_options(kw), seed=kw["seed"]))  # unset precision: the default, auto
