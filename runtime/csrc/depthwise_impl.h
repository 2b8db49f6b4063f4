/* Portable depthwise convolution (the reference the SIMD builds must equal bit for bit):
 * integer arithmetic over each pixel's in-image taps, then the one output stage
 * (outstage_impl.h) once per output row.
 *
 * (x - zx) lies in [-255, 255] and w in [-128, 127]: the product fits int16 (|p| <= 32640),
 * and at most TAPS_MAX of them fit the int32 accumulator.
 * Define DEPTHWISE_NAME and DEPTHWISE_OUTPUT (that build of the output stage) before including. */
#include <string.h>

#include "conv.h"

void DEPTHWISE_NAME(const depthwise_args *a, int64_t r0, int64_t r1, const depthwise_scratch *s) {
    const conv_geom *g = &a->g;
    const int64_t c = g->c;
    const int32_t zx = a->zx;
    for (int64_t r = r0; r < r1; ++r) {
        const int64_t b = r / g->oh, oy = r % g->oh;
        for (int64_t ox = 0; ox < g->ow; ++ox) {
            int32_t *restrict acc = s->acc + ox * c;
            memset(acc, 0, (size_t)c * sizeof(int32_t));
            const int64_t n = depthwise_taps(a, b, oy, ox, s);
            for (int64_t t = 0; t < n; ++t) {
                const uint8_t *restrict xp = s->xp[t];
                const int8_t *restrict wp = s->wp[t];
                for (int64_t ch = 0; ch < c; ++ch) acc[ch] += ((int32_t)xp[ch] - zx) * (int32_t)wp[ch];
            }
        }
        DEPTHWISE_OUTPUT(s->acc, c, g->ow, c, r * g->ow, 0, &a->os);
    }
}
