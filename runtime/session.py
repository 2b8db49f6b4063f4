"""InferenceSession: load and validate -> check ops -> optimise -> build kernels (weights
packed here, once) -> run.  Shaped like onnxruntime.InferenceSession so users already know it.

Every failure is an InferenceError naming the node and op type: the loader's validation
(runtime/validate.py) refuses malformed models and tensors over the memory limit before
anything is allocated, and the session converts whatever a pass or kernel still raises."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from runtime import kernels, ops
from runtime.errors import InferenceError
from runtime.graph import Graph, ValueInfo
from runtime.loader import load_model
from runtime.passes import optimize
from runtime.validate import RunShapeCheck

_NP_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(bool)": np.bool_,
    "tensor(float16)": np.float16,
}


def default_threads() -> int:
    """All cores this process may run on (DESIGN.md §7: use all cores unless told otherwise)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class InferenceSession:
    """Runs an ONNX model (fp32, QDQ or QOperator int8) on the bundled kernels.

    ``threads`` defaults to every available core; ``isa`` forces an instruction-set path
    ('portable', 'avx2', 'avx512vnni', 'amx'), else $COMPRESS_RUNTIME_ISA or the fastest.
    ``memory_limit`` (bytes; default $COMPRESS_RUNTIME_MEMORY_LIMIT, else 4 GiB) bounds every
    tensor and the constants together: a model or input that would exceed it is refused
    before allocation."""

    def __init__(
        self,
        path_or_bytes: str | os.PathLike | bytes,
        threads: int | None = None,
        isa: str | None = None,
        memory_limit: int | None = None,
    ) -> None:
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int | np.integer)):
            raise InferenceError(f"threads must be an integer >= 1, got {threads!r}")
        threads = default_threads() if threads is None else int(threads)
        if threads < 1:
            raise InferenceError(f"threads must be >= 1, got {threads}")
        loaded = load_model(path_or_bytes, memory_limit)
        graph = loaded.graph
        self._check_shapes = RunShapeCheck(loaded.shapes, loaded.memory_limit)
        try:
            self._graph = optimize(graph)
        except InferenceError:
            raise
        except (MemoryError, RecursionError) as exc:
            raise InferenceError(f"{graph.source}: optimising the graph ran out of memory ({exc!r})") from exc
        except Exception as exc:  # a pass evaluating a malformed constant subgraph
            raise InferenceError(f"{graph.source}: optimising the graph failed: {type(exc).__name__}: {exc}") from exc
        # The instruction-set path is resolved once ($COMPRESS_RUNTIME_ISA read at load, not per kernel call).
        self._opts = ops.RunOptions(threads=threads, isa=kernels.path_name(isa))
        self._kernels = []
        for node in self._graph.nodes:
            try:
                self._kernels.append(ops.build(node, self._graph, self._opts))
            except InferenceError:
                raise
            except Exception as exc:
                raise InferenceError(
                    f"{self._graph.source}: cannot prepare {node.describe()}: {exc}"
                ) from exc
        self._last_use = self._plan_frees()
        self._plan_slots()

    def _plan_slots(self) -> None:
        """Numbers every tensor once, so a run indexes a list instead of a dict per node: slot 0
        is always None (omitted inputs), slot 1 takes outputs nobody names, then the constants
        (filled once, in ``_template``), the inputs and every node output."""
        index: dict[str, int] = {}

        def slot(name: str) -> int:
            return index.setdefault(name, len(index) + 2) if name else 0

        for name in self._graph.constants:
            slot(name)
        self._input_slots = [(info, slot(info.name)) for info in self._graph.inputs]
        self._steps = []
        for node, frees in zip(self._graph.nodes, self._last_use, strict=True):
            ins = tuple(slot(name) for name in node.inputs)
            outs = tuple(slot(name) if name else 1 for name in node.outputs)
            self._steps.append((node, ins, outs, tuple(index[name] for name in frees)))
        for name in self._graph.output_names():
            slot(name)
        self._slots = index
        self._template: list[np.ndarray | None] = [None] * (len(index) + 2)
        for name, value in self._graph.constants.items():
            self._template[index[name]] = value

    def _plan_frees(self) -> list[list[str]]:
        """Per node, the intermediate tensors it reads for the last time (freed after it)."""
        last: dict[str, int] = {}
        for idx, node in enumerate(self._graph.nodes):
            for name in node.inputs:
                if name and name not in self._graph.constants:
                    last[name] = idx
        keep = self._graph.output_names()
        frees: list[list[str]] = [[] for _ in self._graph.nodes]
        for name, idx in last.items():
            if name not in keep:
                frees[idx].append(name)
        return frees

    def get_inputs(self) -> list[ValueInfo]:
        return list(self._graph.inputs)

    def get_outputs(self) -> list[ValueInfo]:
        return list(self._graph.outputs)

    @property
    def graph(self) -> Graph:
        """The optimised graph the session executes (for inspection and tests)."""
        return self._graph

    def _feed(self, input_feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The graph's inputs, checked against their declared type and shape, in graph order."""
        values: dict[str, np.ndarray] = {}
        for info in self._graph.inputs:
            if info.name not in input_feed:
                raise InferenceError(f"{self._graph.source}: missing input {info.name!r}")
            try:
                x = np.asarray(input_feed[info.name])
            except Exception as exc:
                raise InferenceError(f"{self._graph.source}: input {info.name!r} is not an array ({exc})") from None
            want = _NP_TYPES.get(info.type)
            if want is not None and x.dtype != want:
                raise InferenceError(
                    f"{self._graph.source}: input {info.name!r} must be {info.type}, got {x.dtype}"
                )
            if len(info.shape) != x.ndim or any(
                isinstance(d, int) and d > 0 and d != s for d, s in zip(info.shape, x.shape, strict=False)
            ):
                raise InferenceError(
                    f"{self._graph.source}: input {info.name!r} has shape {x.shape}, "
                    f"the model declares {info.shape}"
                )
            values[info.name] = x
        if len(input_feed) != len(values):
            unknown = set(input_feed) - set(values)
            raise InferenceError(f"{self._graph.source}: unknown inputs {sorted(unknown)}")
        return values

    def run(
        self,
        output_names: Sequence[str] | None,
        input_feed: Mapping[str, np.ndarray],
        run_options: object = None,
    ) -> list[np.ndarray]:
        """Outputs named in output_names (all when None), in that order."""
        names = [o.name for o in self._graph.outputs] if not output_names else list(output_names)
        declared = self._graph.output_names()
        if missing := [n for n in names if n not in declared]:
            raise InferenceError(f"{self._graph.source}: {missing} are not outputs of the model")
        feeds = self._feed(input_feed)
        self._check_shapes(feeds)
        values = self._template.copy()
        for info, idx in self._input_slots:
            values[idx] = feeds[info.name]
        source = self._graph.source
        for compute, (node, ins, outs, frees) in zip(self._kernels, self._steps, strict=True):
            try:
                results = compute(*[values[i] for i in ins])
            except InferenceError:
                raise
            except Exception as exc:
                raise InferenceError(f"{source}: {node.describe()} failed: {exc}") from exc
            for idx, value in zip(outs, results, strict=False):
                values[idx] = value
            for idx in frees:
                values[idx] = None
        slots = self._slots
        if absent := [n for n in names if values[slots[n]] is None]:
            raise InferenceError(f"{self._graph.source}: outputs {absent} were not produced")
        return [values[slots[n]] for n in names]
