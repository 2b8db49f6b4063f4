/* Portable C micro-kernel and output stage: the reference every SIMD path must match bit for
 * bit.  Compiled without ISA flags, so it runs on any x86-64 (or other) CPU. */
#include <string.h>

#include "qgemm.h"

#define OUTPUT_NAME qgemm_output_portable
#include "outstage_impl.h"

#define PORTABLE_MR 4

static void kernel(const void *a_, int64_t lda, const void *b_, int64_t bstride, int64_t kd, int rows, int nb,
                   int32_t *c) {
    const uint8_t *a = a_;
    const int8_t *b = b_;
    (void)bstride;
    (void)nb; /* the descriptor's nb is 1 */
    for (int i = 0; i < rows; ++i) {
        int32_t acc[QGEMM_NBLOCK];
        memset(acc, 0, sizeof acc);
        for (int64_t k = 0; k < kd; k += 4) {
            const int8_t *bk = b + k * QGEMM_NBLOCK;
            for (int j = 0; j < QGEMM_NBLOCK; ++j)
                for (int t = 0; t < 4; ++t) acc[j] += (int32_t)a[i * lda + k + t] * (int32_t)bk[j * 4 + t];
        }
        memcpy(c + i * QGEMM_NR_MAX, acc, sizeof acc);
    }
}

const qgemm_isa qgemm_isa_portable = {
    .mr = PORTABLE_MR,
    .nb = 1,
    .kalign = 4,
    .kernel = kernel,
    .output = qgemm_output_portable,
};
