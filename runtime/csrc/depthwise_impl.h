/* Depthwise convolution body, included by one translation unit per instruction set
 * (depthwise_portable.c, depthwise_avx2.c, depthwise_avx512.c) and auto-vectorised over
 * channels by the compiler under that unit's -m flags.  Only integer arithmetic and one
 * fp32 multiply per element, so every build gives bit-identical results.
 *
 * (x - zx) lies in [-255, 255] and w in [-128, 127]: the product fits int16 (|p| <= 32640),
 * which lets the compiler multiply 16-bit lanes before widening the sum to int32.
 * Define DEPTHWISE_NAME and DEPTHWISE_OUTPUT (that build of the output stage) before including. */
#include <string.h>

#include "conv.h"

void DEPTHWISE_NAME(const depthwise_args *a, int64_t r0, int64_t r1, int32_t *acc) {
    const conv_geom *g = &a->g;
    const int64_t c = g->c;
    const int16_t zx = (int16_t)a->zx;
    const out_stage *os = &a->os;
    for (int64_t r = r0; r < r1; ++r) {
        const int64_t b = r / g->oh, oy = r % g->oh;
        for (int64_t ox = 0; ox < g->ow; ++ox) {
            memset(acc, 0, (size_t)c * sizeof(int32_t));
            for (int64_t ky = 0; ky < g->kh; ++ky) {
                const int64_t iy = oy * g->sh - g->pt + ky * g->dh;
                if (iy < 0 || iy >= g->h) continue;
                for (int64_t kx = 0; kx < g->kw; ++kx) {
                    const int64_t ix = ox * g->sw - g->pl + kx * g->dw;
                    if (ix < 0 || ix >= g->w) continue;
                    const uint8_t *restrict xp = a->x + ((b * g->h + iy) * g->w + ix) * c;
                    const int8_t *restrict wp = a->w + (ky * g->kw + kx) * c;
                    for (int64_t ch = 0; ch < c; ++ch)
                        acc[ch] += (int16_t)((int16_t)(xp[ch] - zx) * (int16_t)wp[ch]);
                }
            }
            DEPTHWISE_OUTPUT(acc, c, 1, c, (b * g->oh + oy) * g->ow + ox, 0, os);
        }
    }
}
