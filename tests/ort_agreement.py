"""ONNX Runtime's agreement with the simulation, asserted as it is on the machine at hand (issue 11).

ORT's u8×s8 kernels are exact on CPUs with VNNI/AMX and saturate pair sums in int16 on those
without (vpmaddubsw). The probe in ``export.validate`` tells which; the tests then demand
identical codes where ORT is exact or the weights are 7-bit (``weight_range='reduced'``), and
a measured, bounded disagreement where it saturates — never a skip."""

from __future__ import annotations

from export.validate import Agreement, probe_onnxruntime


def ort_is_exact() -> bool:
    return probe_onnxruntime().exact


def assert_ort_agreement(
    a: Agreement, *, saturated_top1: float, reduced: bool = False, codes: float = 0.999, top1: float = 0.995
) -> None:
    """``codes``/``top1``: what an exact ORT must reach; ``saturated_top1``: the top-1 agreement
    measured on a saturating ORT (AMD Zen 3) for this case, with margin."""
    probe = probe_onnxruntime()
    context = (probe.note(), a)
    if probe.exact or reduced:
        assert a.max_code_diff <= 1 and a.codes_identical >= codes and a.top1_agreement >= top1, context
    else:
        assert a.top1_agreement >= saturated_top1, context
