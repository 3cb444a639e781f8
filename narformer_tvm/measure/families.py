"""Network families written in plain torch (torchvision does not import beside our torch).

Every family is a builder taking keyword parameters; ``STANDARD`` names the published networks
(ResNet-50, MobileNetV2 1.0, ViT-B/16, ...) as parameter sets of these builders, so the zoo's
sampled spaces contain them. ``build(family, **params)`` returns an ``nn.Module`` in eval mode.
"""
from __future__ import annotations

import torch
from torch import nn

from narformer_tvm.measure.convnets import (
    EFFNET_STAGES,
    MNAS_STAGES,
    VGG,
    AlexNet,
    DenseNet,
    GoogLeNet,
    MobileNet,
    NB201Net,
    ResNet,
    ShuffleNetV2,
    SqueezeNet,
)
from narformer_tvm.measure.vision_transformers import ConvNeXt, Swin, ViT

MBV2_STAGES = [(1, 16, 1, 1, 3, 0, "relu6"), (6, 24, 2, 2, 3, 0, "relu6"), (6, 32, 3, 2, 3, 0, "relu6"),
               (6, 64, 4, 2, 3, 0, "relu6"), (6, 96, 3, 1, 3, 0, "relu6"), (6, 160, 3, 2, 3, 0, "relu6"),
               (6, 320, 1, 1, 3, 0, "relu6")]


# MobileNetV3 rows use expansion as a ratio of the input width (torchvision lists absolute sizes).
MBV3_LARGE = [(1, 16, 1, 1, 3, 0, "relu"), (4, 24, 1, 2, 3, 0, "relu"), (3, 24, 1, 1, 3, 0, "relu"),
              (3, 40, 3, 2, 5, 0.25, "relu"), (6, 80, 1, 2, 3, 0, "hswish"), (2.5, 80, 1, 1, 3, 0, "hswish"),
              (2.3, 80, 2, 1, 3, 0, "hswish"), (6, 112, 2, 1, 3, 0.25, "hswish"),
              (6, 160, 3, 2, 5, 0.25, "hswish")]


MBV3_SMALL = [(1, 16, 1, 2, 3, 0.25, "relu"), (4.5, 24, 1, 2, 3, 0, "relu"), (3.67, 24, 1, 1, 3, 0, "relu"),
              (4, 40, 1, 2, 5, 0.25, "hswish"), (6, 40, 2, 1, 5, 0.25, "hswish"),
              (3, 48, 2, 1, 5, 0.25, "hswish"), (6, 96, 3, 2, 5, 0.25, "hswish")]


BUILDERS = {
    "alexnet": AlexNet, "vgg": VGG, "resnet": ResNet, "squeezenet": SqueezeNet,
    "mobilenetv2": lambda **kw: MobileNet(kw.pop("stages", MBV2_STAGES), **kw),
    "mnasnet": lambda **kw: MobileNet(kw.pop("stages", MNAS_STAGES), **{"stem_act": "relu", **kw}),
    "mobilenetv3": lambda **kw: MobileNet(kw.pop("stages", MBV3_LARGE),
                                          **{"stem": 16, "stem_act": "hswish", "gate": "hsigmoid",
                                             "last": 960, "last_hidden": 1280, "se_from_input": False, **kw}),
    "efficientnet": lambda **kw: MobileNet(kw.pop("stages", EFFNET_STAGES),
                                           **{"stem_act": "swish", "se_from_input": True, **kw}),
    "googlenet": GoogLeNet, "densenet": DenseNet, "shufflenet": ShuffleNetV2, "convnext": ConvNeXt,
    "vit": ViT, "swin": Swin, "nb201": NB201Net,
}


# Published networks as (family, params, input resolution).
STANDARD: dict[str, tuple[str, dict, int]] = {
    "alexnet": ("alexnet", {}, 224),
    "vgg11": ("vgg", {"depths": (1, 1, 2, 2, 2)}, 224),
    "vgg16": ("vgg", {}, 224),
    "resnet18": ("resnet", {}, 224),
    "resnet34": ("resnet", {"depths": (3, 4, 6, 3)}, 224),
    "resnet50": ("resnet", {"depths": (3, 4, 6, 3), "bottleneck": True}, 224),
    "resnext50_32x4d": ("resnet", {"depths": (3, 4, 6, 3), "bottleneck": True, "groups": 32, "base_width": 4}, 224),
    "regnetx_400mf": ("resnet", {"depths": (1, 2, 7, 12), "widths": (32, 64, 160, 384), "bottleneck": True,
                                 "expansion": 1, "group_width": 16, "stem": 32, "stem_pool": False}, 224),
    "squeezenet1_0": ("squeezenet", {"version": "1.0"}, 224),
    "squeezenet1_1": ("squeezenet", {"version": "1.1"}, 224),
    "mobilenet_v2": ("mobilenetv2", {}, 224),
    "mnasnet1_0": ("mnasnet", {}, 224),
    "mobilenet_v3_large": ("mobilenetv3", {}, 224),
    "mobilenet_v3_small": ("mobilenetv3", {"stages": MBV3_SMALL, "last": 576, "last_hidden": 1024}, 224),
    "efficientnet_b0": ("efficientnet", {}, 224),
    "efficientnet_b1": ("efficientnet", {"depth": 1.1}, 240),
    "googlenet": ("googlenet", {}, 224),
    "densenet121": ("densenet", {}, 224),
    "shufflenet_v2_x1_0": ("shufflenet", {}, 224),
    "convnext_tiny": ("convnext", {}, 224),
    "vit_b_16": ("vit", {}, 224),
    "swin_t": ("swin", {}, 224),
    "nb201_example": ("nb201", {"arch": "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"}, 32),
}


def build(family: str, **params) -> nn.Module:
    if family not in BUILDERS:
        raise KeyError(f"unknown family {family!r}; known: {', '.join(sorted(BUILDERS))}")
    return BUILDERS[family](**params).eval()


def build_standard(name: str) -> tuple[nn.Module, int]:
    family, params, res = STANDARD[name]
    return build(family, **params), res


def export_onnx(model: nn.Module, path, resolution: int = 224, batch_size: int = 1, opset: int = 17,
                dynamo: bool = False, export_params: bool = True, dynamic_batch: bool = False) -> None:
    """Export with the TorchScript exporter (default) or the dynamo exporter."""
    x = torch.randn(batch_size, 3, resolution, resolution)
    with torch.no_grad():
        if dynamo:
            torch.onnx.export(model, (x,), str(path), dynamo=True, opset_version=opset,
                              external_data=False, verbose=False)
        else:
            torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=opset,
                              export_params=export_params, input_names=["input"], output_names=["output"],
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None)
