"""Convolutional families in plain torch (AlexNet ... ShuffleNetV2, NAS-Bench-201 networks)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _div(v: float, d: int = 8) -> int:
    """Round channels to a multiple of d, as the MobileNet family does."""
    n = max(d, int(v + d / 2) // d * d)
    return n + d if n < 0.9 * v else n


def conv_bn(cin, cout, k=3, s=1, g=1, act: type[nn.Module] | None = nn.ReLU, bias=False):
    layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=g, bias=bias), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class Classifier(nn.Module):
    def __init__(self, cin, classes, hidden=0, dropout=0.0):
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(cin, hidden), nn.ReLU()] if hidden else []
        if dropout:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(hidden or cin, classes))
        self.fc = nn.Sequential(*layers)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class AlexNet(nn.Module):
    def __init__(self, widths=(64, 192, 384, 256, 256), fc=4096, pool=6, classes=1000):
        super().__init__()
        w = widths
        self.features = nn.Sequential(
            nn.Conv2d(3, w[0], 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(w[0], w[1], 5, 1, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(w[1], w[2], 3, 1, 1), nn.ReLU(),
            nn.Conv2d(w[2], w[3], 3, 1, 1), nn.ReLU(),
            nn.Conv2d(w[3], w[4], 3, 1, 1), nn.ReLU(), nn.MaxPool2d(3, 2))
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.head = nn.Sequential(nn.Dropout(), nn.Linear(w[4] * pool * pool, fc), nn.ReLU(), nn.Dropout(),
                                  nn.Linear(fc, fc), nn.ReLU(), nn.Linear(fc, classes))

    def forward(self, x):
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


class VGG(nn.Module):
    def __init__(self, depths=(2, 2, 3, 3, 3), widths=(64, 128, 256, 512, 512), bn=False, fc=4096, pool=7,
                 classes=1000):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for d, w in zip(depths, widths):
            for _ in range(d):
                layers += [nn.Conv2d(cin, w, 3, 1, 1)] + ([nn.BatchNorm2d(w)] if bn else []) + [nn.ReLU()]
                cin = w
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.head = nn.Sequential(nn.Linear(cin * pool * pool, fc), nn.ReLU(), nn.Dropout(),
                                  nn.Linear(fc, fc), nn.ReLU(), nn.Dropout(), nn.Linear(fc, classes))

    def forward(self, x):
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


class SqueezeExcite(nn.Module):
    def __init__(self, c, squeeze, gate: type[nn.Module] = nn.Sigmoid, act: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, squeeze, 1), nn.Conv2d(squeeze, c, 1)
        self.act, self.gate = act(), gate()

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


class ResBlock(nn.Module):
    """Basic (two 3x3) or bottleneck (1x1-kxk-1x1) residual block, optional groups and SE."""

    def __init__(self, cin, cout, stride, bottleneck, mid, groups=1, k=3, se=0.0):
        super().__init__()
        if bottleneck:
            self.body = nn.Sequential(conv_bn(cin, mid, 1), conv_bn(mid, mid, k, stride, groups),
                                      *([SqueezeExcite(mid, max(8, int(cin * se)))] if se else []),
                                      conv_bn(mid, cout, 1, act=None))
        else:
            self.body = nn.Sequential(conv_bn(cin, cout, k, stride),
                                      *([SqueezeExcite(cout, max(8, int(cin * se)))] if se else []),
                                      conv_bn(cout, cout, k, act=None))
        self.short = conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x):
        return F.relu(self.body(x) + self.short(x))


class ResNet(nn.Module):
    """ResNet (basic/bottleneck), ResNeXt (groups, base width) and RegNet-style (group width, SE)."""

    def __init__(self, depths=(2, 2, 2, 2), widths=(64, 128, 256, 512), bottleneck=False, expansion=4,
                 groups=1, base_width=64, group_width=0, kernel=3, se=0.0, stem=64, stem_pool=True,
                 classes=1000):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, stem, 7, 2), *([nn.MaxPool2d(3, 2, 1)] if stem_pool else []))
        blocks: list[nn.Module] = []
        cin = stem
        for i, (d, w) in enumerate(zip(depths, widths)):
            cout = w * expansion if bottleneck else w
            if group_width:  # RegNet: the stage width is the bottleneck width, groups from group width
                mid, g = w, max(1, w // group_width)
                mid = g * (w // g)
            else:
                mid, g = int(w * base_width / 64) * groups, groups
            for j in range(d):
                blocks.append(ResBlock(cin, cout, 2 if (j == 0 and i > 0) else 1, bottleneck, mid, g,
                                       kernel, se))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = Classifier(cin, classes)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


class Fire(nn.Module):
    def __init__(self, cin, squeeze, expand):
        super().__init__()
        self.s = nn.Conv2d(cin, squeeze, 1)
        self.e1, self.e3 = nn.Conv2d(squeeze, expand, 1), nn.Conv2d(squeeze, expand, 3, padding=1)

    def forward(self, x):
        x = F.relu(self.s(x))
        return torch.cat([F.relu(self.e1(x)), F.relu(self.e3(x))], 1)


class SqueezeNet(nn.Module):
    def __init__(self, version="1.0", base=128, incr=128, pct3=0.5, sr=0.125, freq=2, n_fire=8,
                 classes=1000):
        super().__init__()
        stem = 96 if version == "1.0" else 64
        layers: list[nn.Module] = [nn.Conv2d(3, stem, 7 if version == "1.0" else 3, 2), nn.ReLU(),
                                   nn.MaxPool2d(3, 2, ceil_mode=True)]
        pools = {3, 7} if version == "1.0" else {2, 4}
        cin = stem
        for i in range(n_fire):
            e = base + incr * (i // freq)
            layers.append(Fire(cin, max(8, int(sr * e)), e // 2))
            cin = e
            if i + 1 in pools:
                layers.append(nn.MaxPool2d(3, 2, ceil_mode=True))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(cin, classes, 1), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.head(self.features(x))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, k, stride, expand, se=0.0, act: type[nn.Module] = nn.ReLU6,
                 gate: type[nn.Module] = nn.Sigmoid, se_act: type[nn.Module] = nn.ReLU, se_base=None):
        super().__init__()
        mid = _div(cin * expand) if expand != 1 else cin
        layers: list[nn.Module] = [conv_bn(cin, mid, 1, act=act)] if expand != 1 else []
        layers.append(conv_bn(mid, mid, k, stride, mid, act=act))
        if se:
            layers.append(SqueezeExcite(mid, max(8, _div((se_base or mid) * se)), gate, se_act))
        layers.append(conv_bn(mid, cout, 1, act=None))
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


class MobileNet(nn.Module):
    """MobileNetV2, MnasNet, MobileNetV3 and EfficientNet share this skeleton.

    ``stages``: rows (expand, channels, repeats, stride, kernel, se_ratio, act) with act in
    {"relu", "relu6", "hswish", "swish"}; ``width``/``depth`` multipliers scale channels/repeats.
    """

    ACTS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hswish": nn.Hardswish, "swish": nn.SiLU}

    def __init__(self, stages, stem=32, last=1280, width=1.0, depth=1.0, stem_act="relu6",
                 gate="sigmoid", last_hidden=0, se_from_input=False, classes=1000, dropout=0.2):
        super().__init__()
        gate_cls = nn.Hardsigmoid if gate == "hsigmoid" else nn.Sigmoid
        cin = _div(stem * width)
        layers: list[nn.Module] = [conv_bn(3, cin, 3, 2, act=self.ACTS[stem_act])]
        for t, c, n, s, k, se, act in stages:
            cout = _div(c * width)
            for i in range(int(math.ceil(n * depth))):
                se_act = nn.ReLU if act in ("relu", "relu6", "hswish") else nn.SiLU
                layers.append(InvertedResidual(cin, cout, k, s if i == 0 else 1, t, se, self.ACTS[act],
                                               gate_cls, se_act, se_base=cin if se_from_input else None))
                cin = cout
        head_act = self.ACTS[stages[-1][6]]
        last_c = _div(last * max(1.0, width)) if not last_hidden else last
        layers.append(conv_bn(cin, last_c, 1, act=head_act))
        self.features = nn.Sequential(*layers)
        if last_hidden:  # MobileNetV3: a hidden Linear with hardswish before the classifier
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(last_c, last_hidden),
                                      nn.Hardswish(), nn.Dropout(dropout), nn.Linear(last_hidden, classes))
        else:
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                      nn.Linear(last_c, classes))

    def forward(self, x):
        return self.head(self.features(x))


MNAS_STAGES = [(1, 16, 1, 1, 3, 0, "relu"), (3, 24, 3, 2, 3, 0, "relu"), (3, 40, 3, 2, 5, 0, "relu"),
               (6, 80, 3, 2, 5, 0, "relu"), (6, 96, 2, 1, 3, 0, "relu"), (6, 192, 4, 2, 5, 0, "relu"),
               (6, 320, 1, 1, 3, 0, "relu")]


EFFNET_STAGES = [(1, 16, 1, 1, 3, 0.25, "swish"), (6, 24, 2, 2, 3, 0.25, "swish"),
                 (6, 40, 2, 2, 5, 0.25, "swish"), (6, 80, 3, 2, 3, 0.25, "swish"),
                 (6, 112, 3, 1, 5, 0.25, "swish"), (6, 192, 4, 2, 5, 0.25, "swish"),
                 (6, 320, 1, 1, 3, 0.25, "swish")]


class Inception(nn.Module):
    def __init__(self, cin, c1, c3r, c3, c5r, c5, pp):
        super().__init__()
        self.b1 = conv_bn(cin, c1, 1)
        self.b2 = nn.Sequential(conv_bn(cin, c3r, 1), conv_bn(c3r, c3, 3))
        self.b3 = nn.Sequential(conv_bn(cin, c5r, 1), conv_bn(c5r, c5, 3))  # torchvision uses 3x3 here
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), conv_bn(cin, pp, 1))

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


GOOGLENET_CFG = [  # (c1, c3r, c3, c5r, c5, pool_proj), 'M' = max pool
    (64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64), "M",
    (192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
    (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128), "M",
    (256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128)]


class GoogLeNet(nn.Module):
    def __init__(self, cfg=GOOGLENET_CFG, width=1.0, classes=1000):
        super().__init__()
        s = lambda c: max(8, int(c * width))  # noqa: E731
        self.stem = nn.Sequential(conv_bn(3, s(64), 7, 2), nn.MaxPool2d(3, 2, ceil_mode=True),
                                  conv_bn(s(64), s(64), 1), conv_bn(s(64), s(192), 3),
                                  nn.MaxPool2d(3, 2, ceil_mode=True))
        layers: list[nn.Module] = []
        cin = s(192)
        for row in cfg:
            if row == "M":
                layers.append(nn.MaxPool2d(3, 2, ceil_mode=True))
                continue
            c = [s(v) for v in row]
            layers.append(Inception(cin, *c))
            cin = c[0] + c[2] + c[4] + c[5]
        self.blocks = nn.Sequential(*layers)
        self.head = Classifier(cin, classes, dropout=0.2)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


class DenseLayer(nn.Module):
    def __init__(self, cin, growth, bn_size):
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, bn_size * growth, 1, bias=False),
                                  nn.BatchNorm2d(bn_size * growth), nn.ReLU(),
                                  nn.Conv2d(bn_size * growth, growth, 3, 1, 1, bias=False))

    def forward(self, x):
        return torch.cat([x, self.body(x)], 1)


class DenseNet(nn.Module):
    def __init__(self, depths=(6, 12, 24, 16), growth=32, stem=64, bn_size=4, classes=1000):
        super().__init__()
        layers: list[nn.Module] = [conv_bn(3, stem, 7, 2), nn.MaxPool2d(3, 2, 1)]
        c = stem
        for i, d in enumerate(depths):
            for _ in range(d):
                layers.append(DenseLayer(c, growth, bn_size))
                c += growth
            if i < len(depths) - 1:
                layers += [nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c // 2, 1, bias=False), nn.AvgPool2d(2, 2)]
                c //= 2
        layers += [nn.BatchNorm2d(c), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.head = Classifier(c, classes)

    def forward(self, x):
        return self.head(self.features(x))


class ShuffleUnit(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        half = cout // 2
        self.stride = stride
        if stride > 1:
            self.left = nn.Sequential(conv_bn(cin, cin, 3, stride, cin, act=None), conv_bn(cin, half, 1))
        right_in = cin if stride > 1 else half
        self.right = nn.Sequential(conv_bn(right_in, half, 1), conv_bn(half, half, 3, stride, half, act=None),
                                   conv_bn(half, half, 1))

    def forward(self, x):
        if self.stride == 1:
            a, b = x.chunk(2, dim=1)
            y = torch.cat([a, self.right(b)], 1)
        else:
            y = torch.cat([self.left(x), self.right(x)], 1)
        n, c, h, w = y.shape
        return y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleNetV2(nn.Module):
    def __init__(self, depths=(4, 8, 4), widths=(116, 232, 464), last=1024, classes=1000):
        super().__init__()
        layers: list[nn.Module] = [conv_bn(3, 24, 3, 2), nn.MaxPool2d(3, 2, 1)]
        c = 24
        for d, w in zip(depths, widths):
            for j in range(d):
                layers.append(ShuffleUnit(c, w, 2 if j == 0 else 1))
                c = w
        layers.append(conv_bn(c, last, 1))
        self.features = nn.Sequential(*layers)
        self.head = Classifier(last, classes)

    def forward(self, x):
        return self.head(self.features(x))

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")


def parse_nb201(arch: str) -> list[tuple[str, int, int]]:
    """``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` -> [(op, src, dst)] over nodes 0..3."""
    edges = []
    for dst, part in enumerate(arch.strip("|").split("|+|"), start=1):
        for tok in part.strip("|").split("|"):
            op, src = tok.split("~")
            if op not in NB201_OPS:
                raise ValueError(f"unknown NAS-Bench-201 op {op!r}")
            edges.append((op, int(src), dst))
    return edges


class NB201Cell(nn.Module):
    def __init__(self, arch: str, c: int):
        super().__init__()
        self.edges = [(op, s, d) for op, s, d in parse_nb201(arch) if op != "none"]
        mods = []
        for op, _, _ in self.edges:
            if op == "nor_conv_1x1":
                mods.append(nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c)))
            elif op == "nor_conv_3x3":
                mods.append(nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)))
            elif op == "avg_pool_3x3":
                mods.append(nn.AvgPool2d(3, 1, 1, count_include_pad=False))
            else:
                mods.append(nn.Identity())
        self.ops = nn.ModuleList(mods)

    def forward(self, x):
        nodes = [x]
        for dst in (1, 2, 3):
            ins = [m(nodes[s]) for (op, s, d), m in zip(self.edges, self.ops) if d == dst]
            nodes.append(sum(ins) if ins else torch.zeros_like(x))
        return nodes[3]


class NB201Reduction(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.a = nn.Sequential(nn.ReLU(), nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout),
                               nn.ReLU(), nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.b = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(cin, cout, 1, bias=False))

    def forward(self, x):
        return self.a(x) + self.b(x)


class NB201Net(nn.Module):
    def __init__(self, arch: str, c=16, n_cells=5, classes=10):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)]
        for stage in range(3):
            if stage:
                layers.append(NB201Reduction(c, 2 * c))
                c *= 2
            layers += [NB201Cell(arch, c) for _ in range(n_cells)]
        layers += [nn.BatchNorm2d(c), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.head = Classifier(c, classes)

    def forward(self, x):
        return self.head(self.features(x))
