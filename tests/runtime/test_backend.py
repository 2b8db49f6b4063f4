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
    # name of the node case -> the documented restriction it exercises
}


def case_ops(case) -> set[tuple[str, str]]:
    """(domain, op type) of every node of a case's graph, ai.onnx spelled ''."""
    return {("" if n.domain in ("", "ai.onnx") else n.domain, n.op_type) for n in case.model.graph.node}


def claimed_cases() -> list[str]:
    """Names of the node cases whose every op the runtime registers, minus the exclusions."""
    claimed = {op.key for op in registry.specs()}
    return sorted(c.name for c in NODE_CASES if case_ops(c) <= claimed and c.name not in EXCLUDED)


CLAIMED = claimed_cases()
backend_test = onnx.backend.test.BackendTest(RuntimeBackend, __name__)
backend_test.include(rf"^({'|'.join(map(re.escape, CLAIMED))})_cpu$")
globals().update(backend_test.test_cases)


def test_every_registered_onnx_op_is_exercised_by_the_suite():
    """An ai.onnx op the runtime claims but no case runs would be a claim without a check."""
    covered = {op for c in NODE_CASES if c.name in set(CLAIMED) for op in case_ops(c)}
    with_cases = {op for c in NODE_CASES for op in case_ops(c)}
    unchecked = sorted(op.op_type for op in registry.specs() if op.key in with_cases and op.key not in covered)
    assert not unchecked, f"registered ops whose every ONNX case is excluded: {unchecked}"


def test_exclusions_name_real_cases_of_claimed_ops():
    names = {c.name: c for c in NODE_CASES}
    claimed = {op.key for op in registry.specs()}
    for name in EXCLUDED:
        assert name in names and case_ops(names[name]) <= claimed, name


def main() -> int:
    """Runs the claimed cases and prints passed / claimed / all node cases."""
    suite = unittest.TestSuite()
    case_class = backend_test.test_cases["OnnxBackendNodeModelTest"]
    for name in CLAIMED:
        suite.addTest(case_class(f"{name}_cpu"))
    result = unittest.TextTestRunner(verbosity=0, stream=sys.stderr).run(suite)
    failed = {t.id().rsplit(".", 1)[-1] for t, _ in result.failures + result.errors}
    print(f"passed {len(CLAIMED) - len(failed)} / claimed {len(CLAIMED)} / all node cases {len(NODE_CASES)}")
    for name in sorted(failed):
        print("FAILED", name)
    return int(bool(failed))


if __name__ == "__main__":
    sys.exit(main())
