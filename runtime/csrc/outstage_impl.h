/* The one output stage of every GEMM, convolution and depthwise path (see qgemm.h), included
 * by one translation unit per instruction set (qgemm_portable.c, qgemm_avx2.c,
 * qgemm_avx512vnni.c) so the compiler vectorises it under that unit's -m flags.
 *
 * Bit-identical in every build: the int32 bias add wraps (as vpaddd does), and the float part
 * is IEEE single operations in a fixed order (built with -ffp-contract=off, no fast-math):
 * convert, multiply, clamp to [lo - zy, hi - zy] (both integers), then round half to even
 * with the 1.5 * 2^23 trick -- exact for |f| < 2^22 in the default rounding mode, and the
 * clamped value is within +-510 -- so the final conversion to int32 is exact.
 * Define OUTPUT_NAME before including. */
#include <stdint.h>

#include "qgemm.h"

void OUTPUT_NAME(const int32_t *c, int64_t ldc, int64_t rows, int64_t cols, int64_t row0, int64_t col0,
                 const out_stage *os) {
    const int32_t *restrict bias = os->bias + col0;
    if (os->mult == NULL) {
        for (int64_t i = 0; i < rows; ++i) {
            const int32_t *restrict acc = c + i * ldc;
            int32_t *restrict out = (int32_t *)os->out + (row0 + i) * os->ldo + col0;
            for (int64_t j = 0; j < cols; ++j) out[j] = (int32_t)((uint32_t)acc[j] + (uint32_t)bias[j]);
        }
        return;
    }
    const float *restrict mult = os->mult + col0;
    const float flo = os->flo, fhi = os->fhi, magic = 12582912.0f; /* 1.5 * 2^23 */
    const int32_t zy = os->zy;
    for (int64_t i = 0; i < rows; ++i) {
        const int32_t *restrict acc = c + i * ldc;
        uint8_t *restrict out = (uint8_t *)os->out + (row0 + i) * os->ldo + col0;
        for (int64_t j = 0; j < cols; ++j) {
            float f = (float)(int32_t)((uint32_t)acc[j] + (uint32_t)bias[j]) * mult[j];
            f = f < flo ? flo : f;
            f = f > fhi ? fhi : f;
            f = (f + magic) - magic;
            out[j] = (uint8_t)((int32_t)f + zy);
        }
    }
}
