"""A seeded, bounded fuzz run of the runtime's door in CI: a few hundred mutants of the four
seed models (fp32, QDQ, QOperator, residual QDQ) through InferenceSession(bytes) and .run in a
worker with a 4 GiB address-space limit.  Every one must run or raise the runtime's named
error: no crash, no hang, no other exception, no MemoryError."""

from __future__ import annotations

from bench.fuzz import BAD, SEED_NAMES, campaign, mutant, seed_models


def test_mutants_are_a_pure_function_of_seed_and_index():
    seeds = seed_models()
    assert mutant(seeds, 7, 123) == mutant(seed_models(), 7, 123)
    assert mutant(seeds, 7, 123) != mutant(seeds, 8, 123)


def test_three_hundred_mutants_get_named_errors_or_run():
    report = campaign(n=300, seed=2026, timeout=10.0)
    assert sum(report.counts.values()) == 300
    assert report.bad == 0, report.table()
    assert {k for k in report.counts if k not in BAD} == {"ok", "named"}  # both paths exercised
    assert set(report.by_seed) == set(SEED_NAMES)
