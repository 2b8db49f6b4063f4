"""The recipe stages: each one a thin call of the public API on a shared :class:`RunState`.

Nothing here exists only for the CLI: a stage is what a user would write in Python
(``compress.prune(...)``, ``compress.quantize(...)``, ...) with the recipe's options as
arguments. The state holds what flows between stages (float model, the dense teacher,
the fake-quant model, files written) plus small JSON-able facts for the report.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import compress
from compress import distributed
from compress.models import accuracy, train_classifier
from compress.pruning import count_macs, count_params
from compress.recipe import Recipe, Stage
from compress.sources import build_model
from export.api import export_float

INT8_FILE = "model_int8.onnx"
FP32_FILE = "model_fp32.onnx"


@dataclass
class RunState:
    """Everything one stage hands the next."""

    recipe: Recipe
    out: Path
    progress: bool
    train_loader: Iterable
    test_loader: Iterable
    example: torch.Tensor  # one input batch, for tracing and export
    model: nn.Module  # the float model
    teacher: nn.Module | None = None  # the float model before the first prune
    qmodel: nn.Module | None = None
    artifacts: dict[str, str] = field(default_factory=dict)  # name -> file name inside out
    info: dict[str, Any] = field(default_factory=dict)  # JSON-able facts per stage, for the report

    @property
    def show(self) -> bool:
        """Progress bars on rank 0 only, and only when not --quiet."""
        return self.progress and distributed.is_writer()


def _fit(state: RunState, model: nn.Module, epochs: int, lr: float, stage: Stage) -> None:
    """The shared training loop, under DDP with sharded data when launched by torchrun."""
    loader = distributed.shard(state.train_loader, state.recipe.seed + stage.index)
    train_classifier(distributed.wrap(model), loader, epochs, lr, progress=state.show)
    model.eval()


def _model_facts(state: RunState) -> dict[str, int]:
    return {"params": count_params(state.model), "macs": count_macs(state.model, state.example)}


def train(state: RunState, stage: Stage) -> None:
    _fit(state, state.model, stage.options["epochs"], stage.options["lr"], stage)
    state.info[f"{stage.index}:{stage.name}"] = {"test_accuracy": accuracy(state.model, state.test_loader)}


def prune(state: RunState, stage: Stage) -> None:
    o = stage.options
    if state.teacher is None:
        state.teacher = copy.deepcopy(state.model)
    before = _model_facts(state)

    def fine_tune(model: nn.Module, _step: int) -> None:
        _fit(state, model, o["fine_tune_epochs"], o["lr"], stage)

    state.model = compress.prune(
        state.model, amount=float(o["amount"]), structured=o["structured"], importance=o["importance"],
        scope=o["scope"], example_inputs=state.example, protect=o["protect"], schedule=o["schedule"],
        steps=o["steps"], fine_tune=fine_tune if o["fine_tune_epochs"] else None, permanent=True,
    ).eval()
    state.info[f"{stage.index}:{stage.name}"] = {
        "before": before, "after": _model_facts(state),
        "test_accuracy": accuracy(state.model, state.test_loader),
    }


def distill(state: RunState, stage: Stage) -> None:
    o = stage.options
    teacher = state.teacher if o["teacher"] == "before_prune" else build_model(
        o["teacher"], state.recipe.base, at=state.recipe.at, key=("stages", stage.index, "distill", "teacher")
    )
    assert teacher is not None  # recipe validation puts a prune stage before a 'before_prune' teacher
    loader = distributed.shard(state.train_loader, state.recipe.seed + stage.index)
    compress.distill(distributed.wrap(state.model), teacher, loader, loss=o["loss"], epochs=o["epochs"],
                     lr=float(o["lr"]), progress=state.show)
    state.model.eval()
    state.info[f"{stage.index}:{stage.name}"] = {"test_accuracy": accuracy(state.model, state.test_loader)}


def quant_kwargs(o: dict[str, Any]) -> dict[str, Any]:
    """Arguments shared by ``compress.quantize`` and ``compress.prepare_qat``."""
    return dict(method=o["method"], per_channel=o["per_channel"], weight_bits=o["weight_bits"],
                weight_range=o["weight_range"], activation_dtype=o["activation_dtype"],
                percentile=float(o["percentile"]), skip=o["skip"])


def _smoothed(state: RunState, o: dict[str, Any], max_batches: int | None) -> nn.Module:
    """The float model, with SmoothQuant applied when the stage asks for it (a copy then)."""
    if o.get("smoothquant") is None:
        return state.model
    return compress.smooth_quant(state.model, state.train_loader, alpha=float(o["smoothquant"]), skip=o["skip"],
                                 max_batches=max_batches)


def prepare_quantized(state: RunState, o: dict[str, Any], max_batches: int | None, progress: bool) -> nn.Module:
    """The quantized model a quantize stage starts from (static: calibrated fake-quant, QAT: not yet
    trained; dynamic / weight-only: Linear layers swapped for their integer simulations)."""
    mode = o["mode"]
    if mode == "dynamic":
        return compress.quantize_dynamic(_smoothed(state, o, max_batches), skip=o["skip"],
                                         granularity=o["granularity"])
    if mode == "weight_only":
        return compress.quantize_weight_only(state.model, state.train_loader, bits=o["bits"],
                                             group_size=o["group_size"], method=o["algorithm"],
                                             symmetric=o["symmetric"], skip=o["skip"], max_batches=max_batches)
    if mode == "ptq":
        control = {}
        if o["max_drop"] is not None:
            test = state.test_loader
            control = dict(eval_fn=lambda m: accuracy(m, test), max_drop=float(o["max_drop"]))
        return compress.quantize(_smoothed(state, o, max_batches), state.train_loader, max_batches=max_batches,
                                 progress=progress, float_adds=o["float_adds"], **control, **quant_kwargs(o))
    return compress.prepare_qat(
        state.model, state.example, calib_loader=state.train_loader, max_batches=max_batches, progress=progress,
        freeze_bn_after=o["freeze_bn_after"], freeze_observers_after=o["freeze_observers_after"],
        learnable_scales=o["learnable_scales"], **quant_kwargs(o),
    )


def quantize(state: RunState, stage: Stage) -> None:
    o = stage.options
    qmodel = prepare_quantized(state, o, o["max_batches"], state.show)
    if o["mode"] == "qat":
        _fit(state, qmodel, o["epochs"], float(o["lr"]), stage)
    state.qmodel = qmodel.eval()
    static = o["mode"] in ("ptq", "qat")
    if state.show and static:  # what runs int8, what stayed float and why, each output's SQNR (compress.layer_report)
        print(compress.layer_report(state.qmodel, state.train_loader, max_batches=2).table())
    state.info[f"{stage.index}:{stage.name}"] = {
        "test_accuracy": accuracy(state.qmodel, state.test_loader)
    }
    report = getattr(state.qmodel, "accuracy_report", None)
    if report is not None:  # accuracy control: which layers stayed float and why
        state.info[f"{stage.index}:{stage.name}"]["kept_float"] = list(getattr(report, "kept_float", []))


def export(state: RunState, stage: Stage) -> None:
    assert state.qmodel is not None  # recipe validation puts quantize before export
    o = stage.options
    mode = next(st.options["mode"] for st in state.recipe.stages if st.name == "quantize")
    if distributed.is_writer():
        if mode == "dynamic":
            compress.export_dynamic(state.qmodel, state.out / INT8_FILE, (state.example,), opset=o["opset"])
        elif mode == "weight_only":
            compress.export_weight_only(state.qmodel, state.out / INT8_FILE, (state.example,), opset=o["opset"])
        else:
            compress.export_onnx(state.qmodel, state.out / INT8_FILE, state.example, format=o["format"],
                                 opset=o["opset"])
        if o["fp32"]:
            export_float(state.model, state.out / FP32_FILE, state.example, opset=o["opset"])
    state.artifacts["int8_onnx"] = INT8_FILE
    if o["fp32"]:
        state.artifacts["fp32_onnx"] = FP32_FILE
    distributed.barrier()


def scheme_label(o: dict[str, Any]) -> str:
    """What a quantize stage's options make, in a report's words ("int4 weight-only g128 gptq", ...)."""
    mode = o["mode"]
    if mode == "weight_only":
        return f"int{o['bits']} weight-only g{o['group_size']} {o['algorithm']}"
    if mode == "dynamic":
        return "int8 dynamic"
    return "int8" if o["weight_bits"] == 8 else f"w{o['weight_bits']}a8"


def evaluate(state: RunState, stage: Stage) -> None:
    if not distributed.is_writer():
        return
    o = stage.options
    quantize_stage = next((st for st in state.recipe.stages if st.name == "quantize"), None)
    scheme = "int8" if quantize_stage is None else scheme_label(quantize_stage.options)
    paths = {k: state.out / v for k, v in state.artifacts.items()}
    result = compress.evaluate(
        state.test_loader, model=state.model, qmodel=state.qmodel, int8_onnx=paths.get("int8_onnx"),
        fp32_onnx=paths.get("fp32_onnx"), accuracy=o["accuracy"], latency=o["latency"],
        max_batches=o["max_batches"], latency_batch=o["latency_batch"], repeats=o["repeats"],
        threads=o["threads"], progress=state.show, scheme=scheme,
    )
    state.info["evaluation"] = result.to_dict()


def report(state: RunState, stage: Stage) -> None:
    from compress.report import write_report

    if distributed.is_writer():
        names = write_report(state, plot=stage.options["plot"])
        state.artifacts.update({f"report_{Path(n).suffix[1:]}": n for n in names})


STAGES: dict[str, Callable[[RunState, Stage], None]] = {
    "train": train, "fine_tune": train, "prune": prune, "distill": distill, "quantize": quantize,
    "export": export, "evaluate": evaluate, "report": report,
}
