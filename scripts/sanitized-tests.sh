#!/usr/bin/env bash
# Run the engine's tests against the AddressSanitizer/UBSan build of the compiled kernels.
#
#   bash scripts/sanitized-tests.sh                  # the engine's property tests (a few minutes)
#   bash scripts/sanitized-tests.sh tests/ops/test_cpu_kernels.py -k grad_weight
#
# LARGEKERNEL_SANITIZE=1 makes the engine compile (and cache separately) a sanitized library; a
# sanitized shared library can only be loaded after the ASan runtime, hence LD_PRELOAD. Leak
# checking is off: CPython itself does not free everything at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
CC_BIN=${CC:-cc}
LD_PRELOAD="$("$CC_BIN" -print-file-name=libasan.so) $("$CC_BIN" -print-file-name=libubsan.so)"
export LD_PRELOAD
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LARGEKERNEL_SANITIZE=1
if [ "$#" -eq 0 ]; then
    set -- tests/ops/test_cpu_kernels.py tests/ops/test_conv_correctness.py tests/ops/test_pytorch_paths.py tests/ops/test_grn.py \
        tests/ops/test_ncw1d.py
fi
exec python -m pytest -p no:cacheprovider -q "$@"
