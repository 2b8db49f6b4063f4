/* Portable C block kernel and the scalar output stage: the reference every SIMD path must
 * match bit for bit.  Compiled without ISA flags, so it runs on any x86-64 (or other) CPU. */
#include <math.h>
#include <string.h>

#include "qgemm.h"

void qgemm_store_row(const int32_t *acc, int64_t row, int64_t col0, int64_t ncols, const out_stage *os) {
    if (os->mult == NULL) {
        int32_t *out = (int32_t *)os->out + row * os->ldo + col0;
        for (int64_t j = 0; j < ncols; ++j) out[j] = acc[j] + os->bias[col0 + j];
        return;
    }
    uint8_t *out = (uint8_t *)os->out + row * os->ldo + col0;
    for (int64_t j = 0; j < ncols; ++j) {
        float f = (float)(acc[j] + os->bias[col0 + j]) * os->mult[col0 + j];
        f = f < os->flo ? os->flo : f;
        f = f > os->fhi ? os->fhi : f;
        /* nearbyintf rounds half to even in the default rounding mode, as cvtps2dq does. */
        out[j] = (uint8_t)((int32_t)nearbyintf(f) + os->zy);
    }
}

void qgemm_block_portable(const packed_b *b, const uint8_t *abuf, int64_t rows, int64_t m0, int64_t nb0,
                          int64_t nb1, const out_stage *os) {
    const int64_t kp = b->kp;
    for (int64_t jb = nb0; jb < nb1; ++jb) {
        const int8_t *blk = b->data + jb * kp * QGEMM_NBLOCK;
        const int64_t col0 = jb * QGEMM_NBLOCK;
        const int64_t ncols = b->n - col0 < QGEMM_NBLOCK ? b->n - col0 : QGEMM_NBLOCK;
        for (int64_t i = 0; i < rows; ++i) {
            const uint8_t *a = abuf + i * kp;
            int32_t acc[QGEMM_NBLOCK];
            memset(acc, 0, sizeof acc);
            for (int64_t k = 0; k < kp; k += 4) {
                const int8_t *bk = blk + k * QGEMM_NBLOCK;
                for (int c = 0; c < QGEMM_NBLOCK; ++c)
                    for (int t = 0; t < 4; ++t) acc[c] += (int32_t)a[k + t] * (int32_t)bk[c * 4 + t];
            }
            qgemm_store_row(acc, m0 + i, col0, ncols, os);
        }
    }
}
