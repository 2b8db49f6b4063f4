"""Run a validated recipe stage by stage, with a checkpoint after each one.

A checkpoint holds state_dicts and plain values only (read back with
``weights_only=True``). The fake-quant GraphModule is not pickled: on resume it is
re-prepared from the restored float model with the recipe's quantize options (one
calibration batch suffices, every calibrated value is then overwritten) and its saved
state_dict is loaded into it, which restores it exactly. Each stage seeds torch and
the loaders' generators from (recipe seed, stage index), so a resumed run computes
what the uninterrupted run computes.
"""

from __future__ import annotations

import io
import random
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compress import distributed
from compress.errors import CompressError, RecipeError, translate_errors
from compress.recipe import Recipe, Stage
from compress.sources import build_loaders, build_model, conform_to_state_dict, first_line, save_model
from compress.stages import STAGES, RunState, prepare_quantized
from export.atomic import write_atomic

CHECKPOINT = "checkpoint.pt"
MODEL_FILE = "model.pt"
FORMAT = 1


def seed_everything(seed: int, loaders: Iterable[Iterable]) -> None:
    """Same seed, same stage → same numbers, whether the run was resumed or not."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    for loader in loaders:
        gen = getattr(loader, "generator", None)
        if isinstance(gen, torch.Generator):
            gen.manual_seed(seed)


def _example(recipe: Recipe, loader: Iterable) -> torch.Tensor:
    if recipe.model["input_shape"]:
        return torch.randn(1, *recipe.model["input_shape"], generator=torch.Generator().manual_seed(recipe.seed))
    batch = next(iter(loader))
    x = batch[0] if isinstance(batch, tuple | list) else batch
    return x[:1].clone()


def check_output_folder(out: Path) -> None:
    """Create the output folder and prove it writable before any work starts: a path under a
    file or a read-only folder fails now, not after an hour of training."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise CompressError(f"output folder {out}: not a writable folder ({exc.strerror or exc})") from None


def initial_state(recipe: Recipe, out: Path, progress: bool) -> RunState:
    seed_everything(recipe.seed, ())
    train, test = build_loaders(recipe.data, recipe.base, recipe.seed, at=recipe.at)
    model = build_model(recipe.model, recipe.base, at=recipe.at)
    return RunState(recipe=recipe, out=out, progress=progress, train_loader=train, test_loader=test,
                    example=_example(recipe, test), model=model)


def save_checkpoint(state: RunState, done: int) -> None:
    payload = {
        "format": FORMAT, "fingerprint": state.recipe.fingerprint(), "done": done,
        "model": state.model.state_dict(),
        "teacher": None if state.teacher is None else state.teacher.state_dict(),
        "qmodel": None if state.qmodel is None else state.qmodel.state_dict(),
        "artifacts": dict(state.artifacts), "info": state.info,
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    write_atomic(state.out / CHECKPOINT, buf.getvalue())


def _restore_module(state: RunState, saved: dict[str, torch.Tensor]) -> torch.nn.Module:
    model = build_model(state.recipe.model, state.recipe.base, at=state.recipe.at)
    conform_to_state_dict(model, saved).load_state_dict(saved)
    return model.eval()


_CHECKPOINT_KEYS = {"format", "fingerprint", "done", "model", "teacher", "qmodel", "artifacts", "info"}


def load_checkpoint(state: RunState) -> int:
    """Restore ``state`` from the output folder's checkpoint; returns the number of stages done."""
    path = state.out / CHECKPOINT
    if not path.is_file():
        return 0
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, corrupt, or pickled objects weights_only refuses
        raise CompressError(f"{path}: unreadable checkpoint ({first_line(exc)}); delete it or run "
                            "without --resume") from None
    if not isinstance(ck, dict) or not _CHECKPOINT_KEYS <= ck.keys():
        raise CompressError(f"{path}: not a checkpoint written by compress run; delete it or run without --resume")
    if ck.get("format") != FORMAT or ck.get("fingerprint") != state.recipe.fingerprint():
        raise RecipeError(f"{path} was written by a different recipe (or --set values); run without --resume "
                          f"or with another --out")
    done = ck["done"]
    if not isinstance(done, int) or not 0 <= done <= len(state.recipe.stages):
        raise CompressError(f"{path}: records {done!r} finished stages; delete it or run without --resume")
    try:
        state.model = _restore_module(state, ck["model"])
        if ck["teacher"] is not None:
            state.teacher = _restore_module(state, ck["teacher"])
        if ck["qmodel"] is not None:
            stage = next(s for s in state.recipe.stages[:done] if s.name == "quantize")
            qmodel = prepare_quantized(state, stage.options, max_batches=1, progress=False)
            qmodel.load_state_dict(ck["qmodel"])
            state.qmodel = qmodel.eval()
        state.artifacts, state.info = dict(ck["artifacts"]), dict(ck["info"])
    except CompressError:
        raise
    except Exception as exc:  # tensors of other shapes, a qmodel without a quantize stage, ...
        raise CompressError(f"{path}: does not restore this recipe's models ({type(exc).__name__}: {first_line(exc)}); "
                            "delete it or run without --resume") from None
    return done


def _run_stage(state: RunState, stage: Stage) -> None:
    """One stage; whatever fails inside it is a CompressError naming the recipe's stage."""
    at = state.recipe.at("stages", stage.index, stage.name)
    try:
        translate_errors(STAGES[stage.name])(state, stage)
    except CompressError as exc:
        if str(exc).startswith(str(state.recipe.source)):
            raise
        raise type(exc)(f"{at}: {exc}") from exc
    except Exception as exc:  # a bug or a user callable failing: still one line naming the stage
        raise CompressError(f"{at}: failed: {type(exc).__name__}: {exc}") from exc


def run(
    recipe: Recipe, out: Path, *, resume: bool = False, progress: bool = True,
    log: Callable[[str], None] = print,
) -> RunState:
    """Run every stage not yet done; returns the final state."""
    if distributed.is_writer():
        check_output_folder(out)
    distributed.barrier()
    state = initial_state(recipe, out, progress)
    done = load_checkpoint(state) if resume else 0
    timings: list[dict[str, Any]] = state.info.setdefault("timings", [])
    if done:
        log(f"resuming after stage {done}/{len(recipe.stages)} ({recipe.stages[done - 1].name})")
    for stage in recipe.stages[done:]:
        log(f"[{stage.index + 1}/{len(recipe.stages)}] {stage.name}")
        seed_everything(recipe.seed * 1000 + stage.index, (state.train_loader, state.test_loader))
        t0 = time.perf_counter()
        _run_stage(state, stage)
        timings.append({"stage": stage.name, "index": stage.index, "seconds": round(time.perf_counter() - t0, 3)})
        if distributed.is_writer():
            save_checkpoint(state, stage.index + 1)
        distributed.barrier()
    if distributed.is_writer():
        save_model(state.model, recipe.model, out / MODEL_FILE)
    return state
