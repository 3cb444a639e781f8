"""ConvNeXt, ViT and Swin in plain torch."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm2d(nn.LayerNorm):
    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    def __init__(self, c, kernel=7, ratio=4):
        super().__init__()
        self.dw = nn.Conv2d(c, c, kernel, padding=kernel // 2, groups=c)
        self.norm = nn.LayerNorm(c)
        self.pw1, self.pw2 = nn.Linear(c, ratio * c), nn.Linear(ratio * c, c)
        self.gamma = nn.Parameter(torch.full((c,), 1e-6))

    def forward(self, x):
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.pw2(F.gelu(self.pw1(self.norm(y)))) * self.gamma
        return x + y.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    def __init__(self, depths=(3, 3, 9, 3), widths=(96, 192, 384, 768), kernel=7, ratio=4, classes=1000):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, widths[0], 4, 4), LayerNorm2d(widths[0])]
        for i, (d, w) in enumerate(zip(depths, widths)):
            if i:
                layers += [LayerNorm2d(widths[i - 1]), nn.Conv2d(widths[i - 1], w, 2, 2)]
            layers += [ConvNeXtBlock(w, kernel, ratio) for _ in range(d)]
        self.features = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(widths[-1])
        self.fc = nn.Linear(widths[-1], classes)

    def forward(self, x):
        return self.fc(self.norm(self.features(x).mean((2, 3))))


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x, bias=None):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        a = (q @ k.transpose(-2, -1)) * (c // self.heads) ** -0.5
        if bias is not None:
            a = a + bias
        x = (a.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(x)


class TransformerLayer(nn.Module):
    def __init__(self, dim, heads, mlp_ratio=4.0):
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(), nn.Linear(int(dim * mlp_ratio), dim))

    def forward(self, x):
        x = x + self.attn(self.n1(x))
        return x + self.mlp(self.n2(x))


class ViT(nn.Module):
    def __init__(self, patch=16, dim=768, depth=12, heads=12, mlp_ratio=4.0, image=224, classes=1000):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, patch, patch)
        n = (image // patch) ** 2
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.zeros(1, n + 1, dim))
        self.layers = nn.Sequential(*[TransformerLayer(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm, self.fc = nn.LayerNorm(dim), nn.Linear(dim, classes)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        return self.fc(self.norm(self.layers(x))[:, 0])


class SwinLayer(nn.Module):
    """Window attention (shifted on odd layers) over a (B, H, W, C) map."""

    def __init__(self, dim, heads, window, shift, mlp_ratio=4.0):
        super().__init__()
        self.window, self.shift = window, shift
        self.n1, self.n2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(), nn.Linear(int(dim * mlp_ratio), dim))

    def forward(self, x):
        b, h, w, c = x.shape
        ws = min(self.window, h, w)
        y = self.n1(x)
        if self.shift and ws < h:
            y = torch.roll(y, (-(ws // 2), -(ws // 2)), (1, 2))
        y = y.reshape(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)
        y = self.attn(y)
        y = y.reshape(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        if self.shift and ws < h:
            y = torch.roll(y, (ws // 2, ws // 2), (1, 2))
        x = x + y
        return x + self.mlp(self.n2(x))


class PatchMerging(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm, self.reduce = nn.LayerNorm(4 * dim), nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x):
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduce(self.norm(x))


class Swin(nn.Module):
    def __init__(self, dim=96, depths=(2, 2, 6, 2), heads=(3, 6, 12, 24), window=7, patch=4, classes=1000):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, patch, patch)
        self.norm0 = nn.LayerNorm(dim)
        stages: list[nn.Module] = []
        for i, (d, h) in enumerate(zip(depths, heads)):
            if i:
                stages.append(PatchMerging(dim))
                dim *= 2
            stages += [SwinLayer(dim, h, window, j % 2 == 1) for j in range(d)]
        self.stages = nn.Sequential(*stages)
        self.norm, self.fc = nn.LayerNorm(dim), nn.Linear(dim, classes)

    def forward(self, x):
        x = self.norm0(self.embed(x).permute(0, 2, 3, 1))
        return self.fc(self.norm(self.stages(x)).mean((1, 2)))
