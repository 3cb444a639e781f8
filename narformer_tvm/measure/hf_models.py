"""Real architectures from Hugging Face ``transformers`` (the ``corpus`` extra), built from sampled
configurations with random weights: text encoders and decoders fed token ids, vision backbones fed
images. Each model type is a zoo family (``zoo.CORPUS``); this module builds and exports them.

Attention runs as plain MatMuls (``eager``): the graph then shows the work, and the exporters of
every supported torch release handle it (SDPA with grouped heads does not export everywhere).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from narformer_tvm.errors import InputError

VOCAB = 1000  # token ids drawn below this; the embedding table's size barely changes latency


@dataclass(frozen=True)
class ModelType:
    model_class: str  # transformers class, e.g. "BertModel"
    config_class: str  # its configuration class
    kind: str  # "text" (input: token ids, batch x seq) | "vision" (input: batch x 3 x res x res)


MODEL_TYPES: dict[str, ModelType] = {
    "bert": ModelType("BertModel", "BertConfig", "text"),
    "roberta": ModelType("RobertaModel", "RobertaConfig", "text"),
    "distilbert": ModelType("DistilBertModel", "DistilBertConfig", "text"),
    "albert": ModelType("AlbertModel", "AlbertConfig", "text"),
    "electra": ModelType("ElectraModel", "ElectraConfig", "text"),
    "gpt2": ModelType("GPT2Model", "GPT2Config", "text"),
    "opt": ModelType("OPTModel", "OPTConfig", "text"),
    "llama": ModelType("LlamaModel", "LlamaConfig", "text"),
    "qwen2": ModelType("Qwen2Model", "Qwen2Config", "text"),
    "t5_encoder": ModelType("T5EncoderModel", "T5Config", "text"),
    "hf_vit": ModelType("ViTModel", "ViTConfig", "vision"),
    "deit": ModelType("DeiTModel", "DeiTConfig", "vision"),
    "swin": ModelType("SwinModel", "SwinConfig", "vision"),
    "convnext": ModelType("ConvNextModel", "ConvNextConfig", "vision"),
    "convnextv2": ModelType("ConvNextV2Model", "ConvNextV2Config", "vision"),
    "mobilevit": ModelType("MobileViTModel", "MobileViTConfig", "vision"),
    "regnet": ModelType("RegNetModel", "RegNetConfig", "vision"),
    "poolformer": ModelType("PoolFormerModel", "PoolFormerConfig", "vision"),
    "segformer": ModelType("SegformerModel", "SegformerConfig", "vision"),
    "pvt_v2": ModelType("PvtV2Model", "PvtV2Config", "vision"),
    "levit": ModelType("LevitModel", "LevitConfig", "vision"),
    "gpt_neo": ModelType("GPTNeoModel", "GPTNeoConfig", "text"),
    "mpnet": ModelType("MPNetModel", "MPNetConfig", "text"),
    "beit": ModelType("BeitModel", "BeitConfig", "vision"),
    "dinov2": ModelType("Dinov2Model", "Dinov2Config", "vision"),
    "mobilenet_v1": ModelType("MobileNetV1Model", "MobileNetV1Config", "vision"),
    "focalnet": ModelType("FocalNetModel", "FocalNetConfig", "vision"),
}


def _transformers():
    try:
        import transformers
    except ImportError:
        raise InputError("the real-architecture families need Hugging Face transformers",
                         hint="pip install 'narformer-tvm[corpus]'") from None
    return transformers


def build(model_type: str, config: dict):
    """The model with random weights, wrapped to take one tensor and return its last hidden state."""
    import torch

    t = _transformers()
    spec = MODEL_TYPES[model_type]
    cfg = getattr(t, spec.config_class)(**config)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    model = getattr(t, spec.model_class)(cfg).eval()

    class LastHidden(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            out = self.m(x)
            return out[0] if isinstance(out, tuple) else out.last_hidden_state

    return LastHidden(model).eval()


def example_input(model_type: str, batch: int, size: int):
    """Token ids (batch, size) for text models, images (batch, 3, size, size) for vision ones."""
    import torch

    generator = torch.Generator().manual_seed(0)
    if MODEL_TYPES[model_type].kind == "text":
        return torch.randint(0, VOCAB, (batch, size), generator=generator)
    return torch.randn(batch, 3, size, size, generator=generator)


def settle_batch_norms(model, x) -> int:
    """Give every BatchNorm the running statistics of its own input when ``x`` flows through ``model``, as
    training would; the number of BatchNorms set.

    With random weights and untrained statistics the activations of a deep convolutional model shrink
    layer by layer until they are denormal floats (MobileViT-small: every activation after its third
    stage), which Intel CPUs process tens of times slower: a latency no trained model has."""
    import torch

    def take_statistics(module, args):
        h = args[0]
        dims = [d for d in range(h.dim()) if d != 1]
        if h.numel() > h.shape[1]:  # more than one value per channel
            var = h.var(dims, unbiased=False)
            module.running_mean.copy_(h.mean(dims))
            module.running_var.copy_(var)
            if module.affine:  # inputs far smaller than eps: the scale undoes eps, so outputs have unit variance
                module.weight.copy_(torch.where(var > 0, ((var + module.eps) / var.clamp_min(1e-30)).sqrt(), 1.0))

    norms = [m for m in model.modules()
             if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return 0
    hooks = [m.register_forward_pre_hook(take_statistics) for m in norms]
    try:
        with torch.no_grad():
            model.eval()(x)  # in order: each norm sees inputs its predecessors already normalised
    finally:
        for h in hooks:
            h.remove()
    return len(norms)


def export(model_type: str, config: dict, path: str | Path, batch: int, size: int, opset: int = 17) -> Path:
    """Export with the TorchScript exporter, static shapes, the input named ``input``."""
    import torch

    model = build(model_type, config)
    x = example_input(model_type, batch, size)
    settle_batch_norms(model, x)
    with torch.no_grad():
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=opset, input_names=["input"],
                          output_names=["output"])
    return Path(path)
