"""NAR-Former V2: a Transformer made graph-aware (Yi et al., NeurIPS 2023).

Reads top to bottom: config, graph-aided attention, grouped feed-forward network, type-aware
enhancement, block, the NNLP GraphSAGE baseline layer, and the full model with sum readout fused
with graph-level static features. Shapes: B graphs, N nodes (padded), F token features, d hidden.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from narformer_tvm.graph.tokens import KINDS, STATIC, static_count

READOUT_SCALE = 100.0  # sums over ~100 nodes stay O(1) for the head


FLOPS_MEMORY = [STATIC.index("log_flops"), STATIC.index("log_memory")]  # static columns of the flops_mac readout


@dataclass
class ModelConfig:
    n_features: int  # token width produced by features.encode
    n_static: int = 6  # graph-level static features (batch, MACs, FLOPs, params, memory, nodes)
    d_model: int = 512  # hidden width
    n_layers: int = 2  # blocks (2 for latency, 6 for NAS cells)
    n_groups: int = 8  # groups of the GFFN's group linear layers
    ffn_ratio: int = 4  # GFFN hidden expansion
    dropout: float = 0.05
    layer_scale: float = 0.1  # initial value of the per-channel residual scales
    block: str = "prenorm"  # "prenorm": LayerNorm -> sub-layer -> scaled residual, for attention and GFFN
    #   | "l2": NAR-Former V2's reference cell block: the attention output L2-normalised then ReLU
    #     replaces H (no residual, no LayerNorm before it); only the GFFN keeps a scaled residual
    backbone: str = "transformer"  # "transformer" (NAR-Former V2) | "gnn" (NNLP: GraphSAGE)
    graph_attention: bool = True  # False: plain softmax self-attention over all nodes
    gffn: bool = True  # False: a plain (ungrouped) feed-forward network
    gffn_norm: bool = False  # the reference code's GFFN (glt_norm LN): a LayerNorm over each group's outputs
    #   after both group linear layers, ReLU between them (default: no inner norm, GELU)
    type_enhance: bool = True  # degree-gated type-aware enhancement after each block
    enhance_first: bool = False  # with type_enhance: gate each block's input instead, as the reference code does
    layerwise_readout: bool = False  # sum the readouts of every block, not only the last (cells)
    layer_fusion: bool = False  # with layerwise_readout: weight each block's readout by a learned sigmoid gate
    readout_norm: bool = True  # LayerNorm each node, then sum / READOUT_SCALE | False: the mean of the raw node
    #   embeddings, the reference code's cell readout
    head: str = "gelu"  # "gelu": one hidden layer of d/2 | "reference": the reference code's cell head, two
    #   hidden layers of d with ReLU and dropout 0.05
    readout: str = "sum"  # "sum": the paper's sum of node embeddings -> head | "node_cost": sum of per-node costs
    #   | "flops_mac": the head corrects a linear FLOPs + memory-access model fitted to the training set
    #   | "roofline": that linear model applied per operator, each operator's two rates corrected by its embedding
    #   | "by_kind": the head corrects a linear model with FLOPs and bytes rates per operator kind
    #     (features.KINDS) and a cost per operator, fitted to the training set

    def to_dict(self) -> dict:
        return asdict(self)


class Dropout(nn.Module):
    """Inverted dropout whose CPU mask NumPy draws: torch's CPU dropout took a quarter of a cell
    training step here (5 ms per (32, 8, 2048) tensor; 0.5 ms this way). Seeded from torch's
    generator on first use, so ``torch.manual_seed`` still fixes a training run."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.rng = None

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, True)
        if self.rng is None:
            self.rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,))))
        # 16-bit uniform integers: the drop rate is p to within 2e-5
        bits = np.frombuffer(self.rng.bytes(2 * x.numel()), dtype=np.uint16).reshape(x.shape)
        keep = (bits >= round(self.p * 65536)).astype(np.float32) / (1.0 - self.p)
        return x * torch.from_numpy(keep).to(x.dtype)


SPARSE_FROM = 64  # nodes per graph above which graph attention runs over the edges, not the dense N x N


class GraphAttention(nn.Module):
    """X = sigmoid(Wq H + b); S = (X X^T / sqrt(d)) * A; row-normalise S; Z = Wa (S H) + b + root(H).

    The sigmoid query doubles as the key, so S is non-negative and masking with the adjacency A
    (symmetric, with self-loops) keeps each node's attention on its graph neighbourhood.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.d_model
        self.query = nn.Linear(d, d)
        self.proj = nn.Linear(d, d)
        self.root = nn.Linear(d, d, bias=False)  # the node's own term, independent of neighbours
        self.scale = 1.0 / math.sqrt(d)

    def forward(self, h, adj, mask):
        x = torch.sigmoid(self.query(h))  # (B, N, d)
        if not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()) and h.shape[1] > SPARSE_FROM:
            return self.proj(self._neighbours(x, h, adj)) + self.root(h)
        s = (x @ x.transpose(1, 2)) * self.scale * adj  # (B, N, N)
        s = s / s.sum(-1, keepdim=True).clamp_min(1e-6)  # row normalisation
        return self.proj(s @ h) + self.root(h)  # (B, N, d)

    def _neighbours(self, x, h, adj):
        """S H over the adjacency's non-zeros only: the same numbers as the dense product, at a cost
        that grows with the edges rather than N^2 (a large graph has a few neighbours per node)."""
        n, d = h.shape[1], h.shape[2]
        b, i, j = adj.nonzero(as_tuple=True)  # (E,) each
        row, col = b * n + i, b * n + j  # (E,) node indices in the flattened batch
        x, hf = x.reshape(-1, d), h.reshape(-1, d)  # (B*N, d)
        s = (x[row] * x[col]).sum(-1) * self.scale * adj[b, i, j]  # (E,)
        sums = torch.zeros(hf.shape[0], dtype=s.dtype).index_add(0, row, s)  # (B*N,)
        w = s / sums[row].clamp_min(1e-6)  # (E,)
        return torch.zeros_like(hf).index_add(0, row, w[:, None] * hf[col]).view_as(h)  # (B, N, d)


class SelfAttention(nn.Module):
    """Ablation: standard single-head softmax attention over all (unpadded) nodes."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.d_model
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, h, adj, mask):
        q, k, v = self.qkv(h).chunk(3, dim=-1)  # (B, N, d) each
        key_mask = mask[:, None, :]  # (B, 1, N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
        return self.proj(out)  # (B, N, d)


class GroupLinear(nn.Module):
    """g independent linear maps, each over d_in/g channels: g times fewer weights than Linear.
    ``norm``: a LayerNorm over each group's outputs (shared across groups), as the reference code's."""

    def __init__(self, d_in: int, d_out: int, groups: int, norm: bool = False):
        super().__init__()
        assert d_in % groups == 0 and d_out % groups == 0, "widths must divide by the group count"
        self.groups = groups
        self.weight = nn.Parameter(torch.empty(groups, d_in // groups, d_out // groups))
        self.bias = nn.Parameter(torch.zeros(d_out))
        nn.init.kaiming_uniform_(self.weight.view(groups * (d_in // groups), -1), a=math.sqrt(5))
        self.norm = nn.LayerNorm(d_out // groups) if norm else None

    def split(self, x):
        """(..., d_in) -> (g, T, d_in/g): the group-major layout, in which a GFFN's two layers chain
        without copying their 4x-wide hidden activations back to token-major order."""
        return x.reshape(-1, self.groups, x.shape[-1] // self.groups).transpose(0, 1)

    @staticmethod
    def merge(y, lead):
        """(g, T, d/g) -> (*lead, d): back to token-major order."""
        return y.transpose(0, 1).reshape(*lead, -1)

    def grouped(self, xg):
        """(g, T, d_in/g) -> (g, T, d_out/g)."""
        y = torch.bmm(xg, self.weight)  # (g, T, d_out/g)
        y = y + self.bias.view(self.groups, 1, -1)
        return self.norm(y) if self.norm is not None else y

    def forward(self, x):
        return self.merge(self.grouped(self.split(x)), x.shape[:-1])  # (B, N, d_out)


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, hidden = cfg.d_model, cfg.d_model * cfg.ffn_ratio
        if cfg.gffn_norm and not cfg.gffn:
            raise ValueError("gffn_norm normalises the GFFN's groups: it needs gffn")
        if cfg.gffn:
            self.fc1 = GroupLinear(d, hidden, cfg.n_groups, cfg.gffn_norm)
            self.fc2 = GroupLinear(hidden, d, cfg.n_groups, cfg.gffn_norm)
        else:
            self.fc1, self.fc2 = nn.Linear(d, hidden), nn.Linear(hidden, d)
        self.act = F.relu if cfg.gffn_norm else F.gelu
        self.drop = Dropout(cfg.dropout)

    def forward(self, h):
        if not isinstance(self.fc1, GroupLinear):
            return self.fc2(self.drop(self.act(self.fc1(h))))  # (B, N, d)
        y = self.act(self.fc1.grouped(self.fc1.split(h)))  # (g, BN, 4d/g)
        y = self.drop(y.transpose(0, 1)).transpose(0, 1)  # the mask drawn in token-major order, as before
        return self.fc2.merge(self.fc2.grouped(y), h.shape[:-1])  # (B, N, d)


class TypeEnhance(nn.Module):
    """H <- sigmoid(Wd D + b) * H, with D the node's (in, out) connection counts."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate = nn.Linear(2, cfg.d_model)

    def forward(self, h, degree):
        return torch.sigmoid(self.gate(torch.log1p(degree))) * h  # (B, N, d)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.d_model
        if cfg.block not in ("prenorm", "l2"):
            raise ValueError(f"block must be prenorm or l2, not {cfg.block!r}")
        self.l2 = cfg.block == "l2"
        if not self.l2:  # the l2 block has no attention residual
            self.norm1 = nn.LayerNorm(d)
            self.scale1 = nn.Parameter(torch.full((d,), cfg.layer_scale))
        self.attn = GraphAttention(cfg) if cfg.graph_attention else SelfAttention(cfg)
        self.norm2 = nn.LayerNorm(d)
        self.ffn = FeedForward(cfg)
        self.scale2 = nn.Parameter(torch.full((d,), cfg.layer_scale))
        self.enhance = TypeEnhance(cfg) if cfg.type_enhance else None
        if cfg.enhance_first and not cfg.type_enhance:
            raise ValueError("enhance_first moves the type-aware enhancement: it needs type_enhance")
        self.enhance_first = cfg.enhance_first
        self.drop = Dropout(cfg.dropout)

    def forward(self, h, adj, degree, mask):
        if self.enhance_first:
            h = self.enhance(h, degree)
        if self.l2:  # every node's embedding starts each block on the unit sphere
            h = self.drop(F.relu(F.normalize(self.attn(h, adj, mask), dim=-1)))
        else:
            h = h + self.drop(self.scale1 * self.attn(self.norm1(h), adj, mask))
        h = h + self.drop(self.scale2 * self.ffn(self.norm2(h)))
        if self.enhance is not None and not self.enhance_first:
            h = self.enhance(h, degree)
        return h  # (B, N, d)


class SAGELayer(nn.Module):
    """NNLP baseline: h' = ReLU(W_self h + W_neigh mean_{j in N(i)} h_j), then LayerNorm."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.d_model
        self.self_fc, self.neigh_fc = nn.Linear(d, d), nn.Linear(d, d, bias=False)
        self.norm = nn.LayerNorm(d)

    def forward(self, h, adj, degree, mask):
        eye = torch.eye(adj.shape[-1], dtype=adj.dtype, device=adj.device)
        nb = adj * (1 - eye)  # neighbours without self-loops, (B, N, N)
        mean = (nb @ h) / nb.sum(-1, keepdim=True).clamp_min(1.0)  # (B, N, d)
        return self.norm(F.relu(self.self_fc(h) + self.neigh_fc(mean)))


class NARFormer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.embed = nn.Sequential(nn.Linear(cfg.n_features, d), nn.LayerNorm(d))
        layer = SAGELayer if cfg.backbone == "gnn" else Block
        if cfg.backbone not in ("transformer", "gnn"):
            raise ValueError(f"backbone must be transformer or gnn, not {cfg.backbone!r}")
        self.blocks = nn.ModuleList(layer(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(d)
        if cfg.layer_fusion:
            if not cfg.layerwise_readout:
                raise ValueError("layer_fusion weights the layer-wise readouts: set layerwise_readout too")
            width = cfg.n_layers * d  # the paper's fusion: an MLP reads every block's readout, gates each
            self.fusion = nn.Sequential(nn.Linear(width, width // 4), nn.ReLU(), nn.Linear(width // 4, cfg.n_layers),
                                        nn.Sigmoid())
        self.static = nn.Sequential(nn.Linear(cfg.n_static, d // 4), nn.GELU())
        if cfg.head == "gelu":
            self.head = nn.Sequential(nn.Linear(d + d // 4, d // 2), nn.GELU(), nn.Linear(d // 2, 1))
        elif cfg.head == "reference":
            self.head = nn.Sequential(nn.Linear(d + d // 4, d), nn.ReLU(), Dropout(0.05), nn.Linear(d, d),
                                      nn.ReLU(), Dropout(0.05), nn.Linear(d, 1))
        else:
            raise ValueError(f"head must be gelu or reference, not {cfg.head!r}")
        nn.init.zeros_(self.head[-1].weight)  # start at exp(0) = 1: the training set's median latency
        nn.init.zeros_(self.head[-1].bias)
        if cfg.readout == "node_cost":
            self.node_cost = nn.Linear(d, 1)  # log cost of each operator
            nn.init.zeros_(self.node_cost.weight)
            nn.init.constant_(self.node_cost.bias, -math.log(READOUT_SCALE))
        elif cfg.readout in ("flops_mac", "roofline"):
            if cfg.n_static < 5:
                raise ValueError(f"the {cfg.readout} readout needs the latency static features (FLOPs, memory)")
            # latency ~ w . [GFLOPs, GB of memory traffic, 1] in the target units; train_predictor fits w
            self.register_buffer("prior_w", torch.tensor([0.0, 0.0, 1.0]))
            if cfg.readout == "roofline":
                self.node_rates = nn.Linear(d, 2)  # log corrections of the operator's per-GFLOP and per-GB times
                nn.init.zeros_(self.node_rates.weight)
                nn.init.zeros_(self.node_rates.bias)
        elif cfg.readout == "by_kind":
            # latency ~ w . features.kind_counts(graph) in the target units; train_predictor fits w
            self.register_buffer("prior_w", torch.tensor([0.0] * (2 * len(KINDS) + 1) + [1.0]))
        elif cfg.readout != "sum":
            raise ValueError(f"readout must be sum, node_cost, flops_mac, roofline or by_kind, not {cfg.readout!r}")

    def forward(self, x, adj, degree, mask, static, cost=None, kind=None):
        """x (B, N, F), adj (B, N, N) symmetric with self-loops, degree (B, N, 2), mask (B, N) bool,
        static (B, S), cost (B, N, 2) per-node GFLOPs and GB and kind (B, N) per-node operator kind
        (roofline, by_kind readouts) -> positive prediction (B,) in the target's normalised units."""
        m = mask.unsqueeze(-1).to(x.dtype)  # (B, N, 1)
        h = self.embed(x) * m  # (B, N, d)
        readouts = []
        for i, block in enumerate(self.blocks):
            h = block(h, adj, degree, mask) * m
            # sum readout (latency adds up over layers) of the last block, or of every block (cells)
            if self.cfg.layerwise_readout or i == len(self.blocks) - 1:
                if self.cfg.readout_norm:
                    final = self.norm(h)  # (B, N, d)
                    readouts.append((final * m).sum(1).float() / READOUT_SCALE)  # (B, d)
                else:  # the l2 block's nodes are already on the unit sphere
                    final = h
                    readouts.append((h * m).sum(1).float() / m.sum(1).float())  # (B, d)
        if self.cfg.layer_fusion:
            stacked = torch.stack(readouts, 1)  # (B, L, d)
            gates = self.fusion(stacked.flatten(1))  # (B, L)
            readout = (stacked * gates.unsqueeze(-1)).sum(1)  # (B, d)
        else:
            readout = sum(readouts)  # (B, d)
        # The head stays float32 under bf16 autocast: bf16 keeps ~3 digits, and cell accuracies 0.1
        # points apart (93.1 vs 93.2%) must stay apart for the ranking.
        with torch.autocast(x.device.type, enabled=False):
            z = torch.cat([readout, self.static(static.float())], dim=-1)  # (B, d + d/4)
            # exp: positive, and latencies spanning orders of magnitude are additive in log space
            out = torch.exp(self.head(z).squeeze(-1).clamp(-20.0, 20.0))  # (B,)
        if self.cfg.readout == "node_cost":  # latency as the sum of operator costs, times a graph factor
            cost = torch.exp(self.node_cost(final).squeeze(-1).clamp(-30.0, 20.0))  # (B, N)
            out = out * (cost * mask).sum(1)  # (B,)
        elif self.cfg.readout == "flops_mac":  # a multiplicative correction of the linear model
            counts = static_count(static[:, FLOPS_MEMORY].double()) / 1e9  # (B, 2) GFLOPs, GB
            ones = torch.ones_like(counts[:, :1])
            prior = torch.cat([counts, ones], dim=-1) @ self.prior_w.double()  # (B,)
            out = out * prior.clamp_min(1e-4).to(out.dtype)
        elif self.cfg.readout == "roofline":  # sum over operators of rate-corrected FLOPs and bytes
            if cost is None:
                raise ValueError("the roofline readout needs per-operator costs (Batch.cost)")
            with torch.autocast(x.device.type, enabled=False):
                rates = torch.exp(self.node_rates(final.float()).clamp(-10.0, 10.0))  # (B, N, 2)
                # a negative fitted weight cannot be a time per GFLOP or per GB: that term starts at zero
                w = self.prior_w[:2].clamp_min(0.0)  # (2,)
                per_node = (cost * w * rates).sum(-1) * mask  # (B, N)
                prior = per_node.sum(1) + self.prior_w[2]  # (B,); untrained: the graph-level line
            out = out * prior.clamp_min(1e-4)
        elif self.cfg.readout == "by_kind":  # a multiplicative correction of the by-kind line
            if cost is None or kind is None:
                raise ValueError("the by_kind readout needs per-operator costs and kinds (Batch.cost, Batch.kind)")
            onehot = F.one_hot(kind, len(KINDS)).double() * mask.unsqueeze(-1)  # (B, N, K)
            per_kind = torch.einsum("bnk,bnc->bkc", onehot, cost.double()).flatten(1)  # (B, 2K) GFLOPs, GB
            n_ops = mask.sum(1, keepdim=True).double()  # (B, 1)
            counts = torch.cat([per_kind, n_ops, torch.ones_like(n_ops)], dim=-1)  # (B, 2K + 2)
            out = out * (counts @ self.prior_w.double()).clamp_min(1e-4).to(out.dtype)
        return out
