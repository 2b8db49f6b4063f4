"""InferenceSession: load -> check ops -> optimise -> build kernels (weights packed here,
once) -> run.  Shaped like onnxruntime.InferenceSession so users already know it."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from runtime import ops
from runtime.errors import InferenceError, UnsupportedOpError
from runtime.graph import Graph, ValueInfo
from runtime.loader import load_graph
from runtime.passes import optimize

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


def check_supported(graph: Graph) -> None:
    """One UnsupportedOpError naming every node without a kernel, before anything runs."""
    missing = [n for n in graph.nodes if not ops.is_supported(n)]
    if missing:
        listing = ", ".join(f"{n.name!r} ({n.domain + '::' if n.domain else ''}{n.op_type})" for n in missing)
        raise UnsupportedOpError(
            f"{graph.source}: {len(missing)} node(s) use ops the runtime does not implement: {listing}"
        )


class InferenceSession:
    """Runs an ONNX model (fp32, QDQ or QOperator int8) on the bundled kernels.

    ``threads`` defaults to every available core; ``isa`` forces an instruction-set path
    ('portable', 'avx2', 'avx512vnni', 'amx'), else $COMPRESS_RUNTIME_ISA or the fastest."""

    def __init__(
        self, path_or_bytes: str | os.PathLike | bytes, threads: int | None = None, isa: str | None = None
    ) -> None:
        graph = load_graph(path_or_bytes)
        check_supported(graph)
        self._graph = optimize(graph)
        threads = default_threads() if threads is None else int(threads)
        if threads < 1:
            raise InferenceError(f"threads must be >= 1, got {threads}")
        self._opts = ops.RunOptions(threads=threads, isa=isa)
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
        values: dict[str, np.ndarray] = dict(self._graph.constants)
        for info in self._graph.inputs:
            if info.name not in input_feed:
                raise InferenceError(f"{self._graph.source}: missing input {info.name!r}")
            x = np.asarray(input_feed[info.name])
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
        unknown = set(input_feed) - {i.name for i in self._graph.inputs}
        if unknown:
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
        values = self._feed(input_feed)
        for node, compute, frees in zip(self._graph.nodes, self._kernels, self._last_use, strict=True):
            try:
                results = compute(*[values[i] if i else None for i in node.inputs])
            except InferenceError:
                raise
            except Exception as exc:
                raise InferenceError(f"{self._graph.source}: {node.describe()} failed: {exc}") from exc
            for name, value in zip(node.outputs, results, strict=False):
                if name:
                    values[name] = value
            for name in frees:
                values.pop(name, None)
        return [values[n] for n in names]
