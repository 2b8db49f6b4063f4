#!/usr/bin/env bash
# Builds runtime._kernels with AddressSanitizer into a temporary folder and runs the kernel
# tests (tests/runtime/test_kernels*.py, test_c_*.py) against that build, with libasan
# preloaded into the Python interpreter.  Any out-of-bounds read or write, use after free or
# double free in the C extension aborts the run with ASan's report.  Leak checking is off:
# the interpreter itself keeps allocations alive at exit.
#
#     bash bench/asan_kernels.sh [extra pytest arguments]
#
# Needs gcc with libasan.  Exit status is pytest's (non-zero on any ASan report).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

mkdir -p "$TMP/tree/tests"
(cd "$ROOT" && find runtime -name '*.py' -not -path '*/__pycache__/*' -exec cp --parents {} "$TMP/tree" \;)
cp "$ROOT"/tests/runtime/test_kernels*.py "$ROOT"/tests/runtime/test_c_*.py "$TMP/tree/tests/"

cd "$ROOT"
CFLAGS="-fsanitize=address -fno-omit-frame-pointer -g" LDFLAGS="-fsanitize=address" \
    "$PY" setup.py -q build_ext --build-lib "$TMP/lib" --build-temp "$TMP/build" >"$TMP/build.log" 2>&1 \
    || { cat "$TMP/build.log"; exit 1; }
cp "$TMP"/lib/runtime/*.so "$TMP/tree/runtime/"  # every extension setup.py builds, instrumented

cd "$TMP/tree"
export LD_PRELOAD
LD_PRELOAD=$(gcc -print-file-name=libasan.so)
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1
export PYTHONPATH="$TMP/tree"
"$PY" - <<'PY'
import runtime._kernels as k
assert "/tree/runtime/" in k.__file__, f"not the ASan build: {k.__file__}"
print("ASan build:", k.__file__, "paths:", k.paths())
PY
"$PY" -m pytest -q -p no:cacheprovider --noconftest tests "$@"
