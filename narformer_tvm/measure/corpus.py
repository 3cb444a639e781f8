"""The real-architecture corpus: model types of Hugging Face ``transformers`` as zoo families.

Each family samples a model type's configuration (width, depth, heads, feed-forward ratio, sequence
length or resolution, batch); ``make`` turns a sample into the configuration's keyword arguments. The
published default configurations (bert-base, gpt2, vit-base, swin-tiny, ...) are the families'
standard members, so they can be measured and scored like the zoo's published networks.
"""
from __future__ import annotations

from narformer_tvm.measure.design_space import BATCHES, Family
from narformer_tvm.measure.hf_models import VOCAB

SEQ = (32, 64, 128, 256)  # tokens per sequence
WIDTHS = (128, 256, 384, 512, 768)  # hidden size; heads of 64 dimensions
DEPTHS = (2, 4, 6, 8, 12)
RES = (96, 128, 160, 192, 224)
RES14 = (112, 140, 168, 196, 224)  # multiples of a 14-pixel patch


def _text(extra: dict | None = None) -> dict:
    return {"width": WIDTHS, "depth": DEPTHS, "ffn": (2, 3, 4), "seq": SEQ, "batch": BATCHES, **(extra or {})}


def _vision(extra: dict, res=RES) -> dict:
    return {**extra, "resolution": res, "batch": BATCHES}


def _heads(width: int) -> int:
    return max(1, width // 64)


def _bert(r):
    return {"hidden_size": r["width"], "num_hidden_layers": r["depth"], "num_attention_heads": _heads(r["width"]),
            "intermediate_size": r["width"] * r["ffn"], "vocab_size": VOCAB, "max_position_embeddings": 514}


def _albert(r):
    return {**_bert(r), "embedding_size": 128}


def _electra(r):
    return {**_bert(r), "embedding_size": r["embedding"]}


def _distilbert(r):
    return {"dim": r["width"], "n_layers": r["depth"], "n_heads": _heads(r["width"]), "hidden_dim": r["width"] * r["ffn"],
            "vocab_size": VOCAB}


def _gpt2(r):
    return {"n_embd": r["width"], "n_layer": r["depth"], "n_head": _heads(r["width"]), "n_inner": r["width"] * r["ffn"],
            "vocab_size": VOCAB, "n_positions": 512, "bos_token_id": 0, "eos_token_id": 0}


def _opt(r):
    return {"hidden_size": r["width"], "num_hidden_layers": r["depth"], "num_attention_heads": _heads(r["width"]),
            "ffn_dim": r["width"] * r["ffn"], "vocab_size": VOCAB, "max_position_embeddings": 512,
            "word_embed_proj_dim": r["width"]}


def _llama(r):
    heads = _heads(r["width"])
    return {"hidden_size": r["width"], "num_hidden_layers": r["depth"], "num_attention_heads": heads,
            "num_key_value_heads": max(1, heads // r["gqa"]), "intermediate_size": r["width"] * r["ffn"],
            "vocab_size": VOCAB, "max_position_embeddings": 512}


def _gpt_neo(r):  # global and local (windowed) attention alternate, as published; every depth is even
    return {"hidden_size": r["width"], "num_layers": r["depth"], "num_heads": _heads(r["width"]),
            "intermediate_size": r["width"] * r["ffn"], "attention_types": [[["global", "local"], r["depth"] // 2]],
            "window_size": r["window"], "vocab_size": VOCAB, "max_position_embeddings": 512}


def _mpnet(r):
    return {"hidden_size": r["width"], "num_hidden_layers": r["depth"], "num_attention_heads": _heads(r["width"]),
            "intermediate_size": r["width"] * r["ffn"], "vocab_size": VOCAB}


def _t5(r):
    return {"d_model": r["width"], "d_kv": 64, "d_ff": r["width"] * r["ffn"], "num_layers": r["depth"],
            "num_heads": _heads(r["width"]), "vocab_size": VOCAB}


def _vit(r):
    return {"hidden_size": r["width"], "num_hidden_layers": r["depth"], "num_attention_heads": _heads(r["width"]),
            "intermediate_size": r["width"] * r["ffn"], "patch_size": r["patch"], "image_size": r["resolution"]}


def _beit(r):  # BEiT's relative position bias per layer, as the published checkpoints have it
    return {**_vit(r), "use_relative_position_bias": True}


def _dinov2(r):  # position embeddings sized for the resolution: no interpolation at run time
    return {"hidden_size": r["width"], "num_hidden_layers": r["depth"], "num_attention_heads": _heads(r["width"]),
            "mlp_ratio": r["ffn"], "patch_size": 14, "image_size": r["resolution"]}


def _mobilenet_v1(r):
    return {"depth_multiplier": r["multiplier"], "image_size": r["resolution"]}


def _focalnet(r):
    return {"embed_dim": r["embed"], "depths": list(r["depths"]), "focal_levels": [r["levels"]] * 4,
            "focal_windows": [3] * 4, "image_size": r["resolution"]}


def _swin(r):
    e = r["embed"]
    return {"embed_dim": e, "depths": list(r["depths"]), "num_heads": [max(1, e // 32) * 2 ** i for i in range(4)],
            "window_size": r["resolution"] // 32, "image_size": r["resolution"]}  # windows tile every stage


def _stages(r, mults=(1, 2, 4, 8)):
    return [r["width"] * m for m in mults]


def _convnextv2(r):
    return {"hidden_sizes": _stages(r), "depths": list(r["depths"]), "image_size": r["resolution"]}


MOBILEVIT = {  # the published sizes: hidden sizes of the transformer blocks, channels of the convolutions
    "xxs": ([64, 80, 96], [16, 16, 24, 48, 64, 80, 320]),
    "xs": ([96, 120, 144], [16, 32, 48, 64, 80, 96, 384]),
    "s": ([144, 192, 240], [16, 32, 64, 96, 128, 160, 640]),
}


def _mobilevit(r):
    hidden, neck = MOBILEVIT[r["size"]]
    return {"hidden_sizes": hidden, "neck_hidden_sizes": neck, "expand_ratio": r["expand"], "image_size": r["resolution"]}


def _regnet(r):
    return {"embedding_size": 32, "hidden_sizes": _stages(r), "depths": list(r["depths"]), "groups_width": r["group"],
            "layer_type": r["layer"]}


def _mix(r):  # PoolFormer / SegFormer / PVTv2 stage widths: 1, 2, 5, 8 x the base
    return [r["width"] * m for m in (1, 2, 5, 8)]


def _poolformer(r):
    return {"hidden_sizes": _mix(r), "depths": list(r["depths"]), "image_size": r["resolution"]}


def _segformer(r):
    return {"hidden_sizes": _mix(r), "depths": list(r["depths"]), "num_attention_heads": [1, 2, 5, 8],
            "image_size": r["resolution"]}


def _pvt_v2(r):
    return {"hidden_sizes": _mix(r), "depths": list(r["depths"]), "num_attention_heads": [1, 2, 5, 8],
            "image_size": r["resolution"]}


STAGE_DEPTHS = ((1, 1, 2, 1), (2, 2, 2, 2), (2, 2, 6, 2), (3, 3, 9, 3), (2, 2, 4, 2))


def _family(name, model_type, choices, make, standard=None) -> Family:
    return Family(name, f"hf:{model_type}", choices, make, standard or {}, nnlqp=False)


def _std_text(**raw):
    return {"ffn": 4, "seq": 128, "batch": 1, **raw}


def _std_vision(res=224, **raw):
    return {**raw, "resolution": res, "batch": 1}


CORPUS: dict[str, Family] = {f.name: f for f in [
    _family("bert", "bert", _text(), _bert, {"bert-base": _std_text(width=768, depth=12)}),
    _family("roberta", "roberta", _text(), _bert, {"roberta-base": _std_text(width=768, depth=12)}),
    _family("distilbert", "distilbert", _text(), _distilbert, {"distilbert-base": _std_text(width=768, depth=6)}),
    _family("albert", "albert", _text(), _albert, {"albert-base": _std_text(width=768, depth=12)}),
    _family("electra", "electra", _text({"embedding": (128, 256)}), _electra,
            {"electra-small": _std_text(width=256, depth=12, embedding=128)}),
    _family("gpt2", "gpt2", _text(), _gpt2, {"gpt2": _std_text(width=768, depth=12)}),
    _family("opt", "opt", _text(), _opt, {"opt-125m": _std_text(width=768, depth=12)}),
    _family("llama", "llama", _text({"gqa": (1, 2, 4)}), _llama),
    _family("qwen2", "qwen2", _text({"gqa": (1, 2, 4)}), _llama),
    _family("gpt_neo", "gpt_neo", _text({"window": (64, 128, 256)}), _gpt_neo,
            {"gpt-neo-125m": _std_text(width=768, depth=12, window=256)}),
    _family("mpnet", "mpnet", _text(), _mpnet, {"mpnet-base": _std_text(width=768, depth=12)}),
    _family("t5_encoder", "t5_encoder", _text(), _t5, {"t5-small-encoder": _std_text(width=512, depth=6)}),
    _family("hf_vit", "hf_vit", _vision({"width": (192, 256, 384, 512, 768), "depth": DEPTHS, "ffn": (2, 3, 4),
                                         "patch": (16, 32)}), _vit,
            {"vit-base-patch16-224": _std_vision(width=768, depth=12, ffn=4, patch=16)}),
    _family("deit", "deit", _vision({"width": (192, 256, 384, 512, 768), "depth": DEPTHS, "ffn": (2, 3, 4),
                                     "patch": (16, 32)}), _vit,
            {"deit-small": _std_vision(width=384, depth=12, ffn=4, patch=16)}),
    _family("beit", "beit", _vision({"width": (192, 256, 384, 512, 768), "depth": DEPTHS, "ffn": (2, 3, 4),
                                     "patch": (16, 32)}), _beit,
            {"beit-base-patch16-224": _std_vision(width=768, depth=12, ffn=4, patch=16)}),
    _family("dinov2", "dinov2", _vision({"width": (192, 256, 384, 512, 768), "depth": DEPTHS, "ffn": (2, 3, 4)}, RES14),
            _dinov2, {"dinov2-small": _std_vision(width=384, depth=12, ffn=4)}),
    _family("swin", "swin", _vision({"embed": (32, 48, 64, 96), "depths": STAGE_DEPTHS}), _swin,
            {"swin-tiny": _std_vision(embed=96, depths=(2, 2, 6, 2))}),
    _family("convnextv2", "convnextv2", _vision({"width": (24, 32, 48, 64, 96), "depths": STAGE_DEPTHS}), _convnextv2,
            {"convnextv2-tiny": _std_vision(width=96, depths=(3, 3, 9, 3))}),
    _family("mobilevit", "mobilevit", _vision({"size": ("xxs", "xs", "s"), "expand": (2.0, 4.0)},
                                              (128, 160, 192, 224, 256)), _mobilevit,
            {"mobilevit-small": _std_vision(256, size="s", expand=4.0)}),
    _family("regnet", "regnet", _vision({"width": (32, 48, 64, 96), "depths": STAGE_DEPTHS, "group": (8, 16),
                                         "layer": ("x", "y")}), _regnet),
    _family("mobilenet_v1", "mobilenet_v1", _vision({"multiplier": (0.25, 0.5, 0.75, 1.0)}, (128, 160, 192, 224)),
            _mobilenet_v1, {"mobilenet-v1-1.0-224": _std_vision(multiplier=1.0)}),
    _family("focalnet", "focalnet", _vision({"embed": (32, 48, 64, 96), "depths": STAGE_DEPTHS, "levels": (2, 3)}),
            _focalnet, {"focalnet-tiny": _std_vision(embed=96, depths=(2, 2, 6, 2), levels=2)}),
    _family("poolformer", "poolformer", _vision({"width": (32, 48, 64), "depths": STAGE_DEPTHS}), _poolformer,
            {"poolformer-s12": _std_vision(width=64, depths=(2, 2, 6, 2))}),
    _family("segformer", "segformer", _vision({"width": (32, 48, 64), "depths": STAGE_DEPTHS}), _segformer,
            {"segformer-b0": _std_vision(width=32, depths=(2, 2, 2, 2))}),
    _family("pvt_v2", "pvt_v2", _vision({"width": (32, 48, 64), "depths": STAGE_DEPTHS}), _pvt_v2,
            {"pvt-v2-b0": _std_vision(width=32, depths=(2, 2, 2, 2))}),
]}
