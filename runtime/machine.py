"""Which machine a figure was measured on: every latency and agreement figure names the CPU
model, the int8 features it has and the instruction-set path the runtime chose, because all
three change what is fast and, for other engines, what is exact (DESIGN.md §3)."""

from __future__ import annotations

import platform
from functools import cache

from runtime.kernels import path_name

# /proc/cpuinfo flags that decide int8 arithmetic: VNNI accumulates u8×s8 products exactly in
# int32; without it (plain AVX2 / AVX-512BW) engines that use vpmaddubsw saturate pair sums in int16.
INT8_FLAGS = ("avx2", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")


@cache
def _cpuinfo() -> dict[str, str]:
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if not sep:
                    if fields:
                        break  # the first processor's block is enough
                    continue
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    """The CPU's marketing name ('AMD EPYC 9B14', 'Intel(R) Xeon(R) Platinum 8488C', ...)."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine() or "unknown CPU"


def int8_features() -> list[str]:
    """Which of ``INT8_FLAGS`` this CPU reports (empty off Linux/x86)."""
    flags = set(_cpuinfo().get("flags", "").split())
    return [f for f in INT8_FLAGS if f in flags]


def has_vnni() -> bool:
    """True when the CPU multiplies u8×s8 with int32 accumulation in one instruction."""
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(int8_features()))


def describe(path: str | None = None) -> str:
    """One line for tables and reports: CPU model, its int8 features, the runtime's path."""
    feats = ", ".join(int8_features()) or "no x86 int8 extensions"
    return f"{cpu_model()} ({feats}); compress runtime path: {path_name(path)}"
