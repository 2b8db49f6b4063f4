"""ONNX's own conformance suite (``onnx.backend.test.BackendTest``, node cases) against the
runtime.

The include list is generated from the runtime's op registry: a node case runs when every op
of its graph is registered, so claiming an op means passing its cases.  A case may be left out
only through ``EXCLUDED`` below, each with the documented restriction it exercises.

``python tests/runtime/test_backend.py`` prints the counts (passed / cases of claimed ops /
all node cases)."""

from __future__ import annotations

import re
import sys
import unittest
import warnings

import onnx.backend.test
from onnx.backend.test.loader import load_node_model_tests

from runtime.backend import RuntimeBackend
from runtime.ops import registry

with warnings.catch_warnings():  # the case generators overflow casts on purpose
    warnings.simplefilter("ignore")
    NODE_CASES = load_node_model_tests()

EXCLUDED: dict[str, str] = {
    # pattern over node case names -> the documented restriction those cases exercise
    r"^test_(cast|castlike)_.*_to_(FLOAT8|FLOAT4|INT4|UINT4|INT2|UINT2)": "float8, float4 and 2/4-bit integer "
    "types have no numpy kernel: Cast refuses them at load with an InferenceError naming the node",
    r"^test_(quantize|dequantize)linear_(e4m3fn|e5m2|float4e2m1|int2|int4|uint2|uint4)": "the same types as "
    "quantized codes: QuantizeLinear/DequantizeLinear refuse them (8/16/32-bit integer codes only)",
    r"^test_training_dropout": "Dropout with training_mode=True is random; the runtime runs inference "
    "only and refuses it with an InferenceError",
    r"^test_identity_(opt|sequence)$": "optional and sequence values: the runtime holds tensors only",
    r"^test_resize_.*_antialias$": "Resize antialias=1 is refused with an InferenceError (torch's "
    "exporter does not emit it for the models in scope)",
    r"^test_mvn$": "the load-time validation runs ONNX's strict shape inference, which fails on ONNX's own "
    "MeanVarianceNormalization function body in this opset-9 file (the expanded case runs)",
}
CHECKED_ELSEWHERE = {
    # op -> where it is checked, because its every ONNX case is excluded above
    "MeanVarianceNormalization": "tests/runtime/test_ops_reference.py, against onnx.reference",
}
KNOWN_FAILURES: dict[str, str] = {
    # case name -> why it fails; run as expected failures so a fix is noticed, counted as not passed
    "test_attention_4d_causal_padded_kv_bf16_expanded": "a fully masked bfloat16 row gives NaN where ONNX "
    "expects 0 (float32 and float16 variants pass); not diagnosed",
}


def case_ops(case) -> set[tuple[str, str]]:
    """(domain, op type) of every node of a case's graph, ai.onnx spelled ''."""
    return {("" if n.domain in ("", "ai.onnx") else n.domain, n.op_type) for n in case.model.graph.node}


def _excluded(name: str) -> bool:
    return any(re.search(pattern, name) for pattern in EXCLUDED)


def claimed_cases() -> list[str]:
    """Names of the node cases whose every op the runtime registers, minus the exclusions."""
    claimed = {op.key for op in registry.specs()}
    return sorted(c.name for c in NODE_CASES if case_ops(c) <= claimed and not _excluded(c.name))


CLAIMED = claimed_cases()
backend_test = onnx.backend.test.BackendTest(RuntimeBackend, __name__)
backend_test.include(rf"^({'|'.join(map(re.escape, CLAIMED))})_cpu$")
for _name in KNOWN_FAILURES:
    backend_test.xfail(rf"^{_name}_cpu$")
_cases = backend_test.test_cases
for _case in _cases.values():  # the runtime has no CUDA device: drop those items instead of skipping them
    for _attr in [a for a in vars(_case) if a.endswith("_cuda")]:
        delattr(_case, _attr)
globals().update(_cases)


def test_every_registered_onnx_op_is_exercised_by_the_suite():
    """An ai.onnx op the runtime claims but no case runs would be a claim without a check."""
    covered = {op for c in NODE_CASES if c.name in set(CLAIMED) for op in case_ops(c)}
    with_cases = {op for c in NODE_CASES for op in case_ops(c)}
    unchecked = sorted(
        op.op_type
        for op in registry.specs()
        if op.key in with_cases and op.key not in covered and op.op_type not in CHECKED_ELSEWHERE
    )
    assert not unchecked, f"registered ops whose every ONNX case is excluded: {unchecked}"


def test_exclusions_name_real_cases_of_claimed_ops():
    """Each exclusion pattern and known failure still names a case the runtime would claim."""
    claimed = {op.key for op in registry.specs()}
    claimable = [c.name for c in NODE_CASES if case_ops(c) <= claimed]
    for pattern in EXCLUDED:
        assert any(re.search(pattern, name) for name in claimable), pattern
    assert set(KNOWN_FAILURES) <= set(CLAIMED)


def main() -> int:
    """Runs the claimed cases and prints passed / claimed / all node cases."""
    suite = unittest.TestSuite()
    case_class = backend_test.test_cases["OnnxBackendNodeModelTest"]
    for name in CLAIMED:
        suite.addTest(case_class(f"{name}_cpu"))
    result = unittest.TextTestRunner(verbosity=0, stream=sys.stderr).run(suite)
    failed = {t.id().rsplit(".", 1)[-1] for t, _ in result.failures + result.errors + result.expectedFailures}
    excluded = sum(_excluded(c.name) for c in NODE_CASES if case_ops(c) <= {op.key for op in registry.specs()})
    print(
        f"passed {len(CLAIMED) - len(failed)} / claimed {len(CLAIMED)} (+{excluded} excluded) "
        f"/ all node cases {len(NODE_CASES)}"
    )
    for name in sorted(failed):
        print("FAILED", name)
    return int(bool(failed))


if __name__ == "__main__":
    sys.exit(main())
