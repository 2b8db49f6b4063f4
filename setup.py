"""Build the runtime's C extension with the machine's compiler during ``pip install``.

Instruction-set specific files are compiled with their own ``-m`` flags; the
extension picks a path at run time (cpuid), so the wheel runs on any x86-64 and
the portable C path is always present.
"""

from setuptools import Extension, setup

ext = Extension(
    "runtime._kernels",
    sources=["runtime/csrc/kernels.c"],
    extra_compile_args=["-O3", "-std=c11", "-fno-strict-aliasing"],
)

setup(ext_modules=[ext])
