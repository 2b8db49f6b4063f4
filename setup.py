"""Build the runtime's C extension with the machine's compiler during ``pip install``.

Instruction-set specific files are compiled with their own ``-m`` flags (and only those
files), so the rest of the extension stays plain x86-64; the extension picks a path at run
time (cpuid, see runtime/csrc/dispatch.c), so the build runs on any x86-64 and the portable
C path is always present.  Other architectures get the portable path alone.
"""

import platform
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

CSRC = Path("runtime/csrc")
PORTABLE = [
    "module.c",
    "dispatch.c",
    "threadpool.c",
    "qgemm_driver.c",
    "qgemm_portable.c",
    "conv.c",
    "depthwise_portable.c",
    "qadd_portable.c",
    "maxpool.c",
]
AVX512 = ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512vnni"]
ISA_FLAGS = {
    "qgemm_avx2.c": ["-mavx2"],
    "depthwise_avx2.c": ["-mavx2"],
    "qadd_fma.c": ["-mavx2", "-mfma"],
    "qgemm_avx512vnni.c": AVX512,
    "depthwise_avx512.c": AVX512,
    "qgemm_amx.c": [*AVX512, "-mamx-tile", "-mamx-int8"],
}
X86 = platform.machine().lower() in {"x86_64", "amd64"}


class PerFileFlagsBuildExt(build_ext):
    """build_ext that appends each ISA file's ``-m`` flags to that file's compile only."""

    def build_extensions(self) -> None:
        compile_one = self.compiler._compile

        def _compile(obj, src, ext, cc_args, extra_postargs, pp_opts):
            flags = ISA_FLAGS.get(Path(src).name, [])
            return compile_one(obj, src, ext, cc_args, [*extra_postargs, *flags], pp_opts)

        self.compiler._compile = _compile
        super().build_extensions()


sources = PORTABLE + (list(ISA_FLAGS) if X86 else [])
ext = Extension(
    "runtime._kernels",
    sources=[str(CSRC / s) for s in sources],
    depends=[str(p) for p in CSRC.glob("*.h")],
    define_macros=[("COMPRESS_X86", "1")] if X86 else [],
    # -ffp-contract=off: no FMA contraction, so every path rounds the output stage alike.
    extra_compile_args=["-O3", "-std=gnu11", "-fno-strict-aliasing", "-ffp-contract=off", "-Wall"],
    extra_link_args=["-pthread"],
)

# Weight-only int4/int8 GEMM (MatMulNBits): its own module; ISA clones chosen inside at load time.
woq = Extension("runtime._woq", sources=[str(CSRC / "woq_gemm.c")], extra_compile_args=["-O3", "-std=gnu11", "-Wall"],
                extra_link_args=["-pthread"])

setup(ext_modules=[ext, woq], cmdclass={"build_ext": PerFileFlagsBuildExt})
