/* AVX-512 depthwise convolution: 32 channels per step in int16 lanes.  (x - zx) in
 * [-255, 255] times w in [-128, 127] fits int16 exactly (|p| <= 32640), so vpmullw is exact;
 * products are widened to int32 before accumulating.  A pixel's accumulators then go through
 * the one output stage (its AVX-512 build), as in every other path. */
#include <immintrin.h>

#include "conv.h"

static inline __mmask32 tail_mask(int64_t n) { return n >= 32 ? 0xFFFFFFFFu : (__mmask32)((1u << n) - 1u); }

void depthwise_rows_avx512(const depthwise_args *a, int64_t r0, int64_t r1, int32_t *acc) {
    const conv_geom *g = &a->g;
    const int64_t c = g->c;
    const __m512i zx = _mm512_set1_epi16((short)a->zx);
    for (int64_t r = r0; r < r1; ++r) {
        const int64_t b = r / g->oh, oy = r % g->oh;
        for (int64_t ox = 0; ox < g->ow; ++ox) {
            const int64_t row = (b * g->oh + oy) * g->ow + ox;
            for (int64_t ch = 0; ch < c; ch += 32) {
                const __mmask32 mask = tail_mask(c - ch);
                __m512i lo = _mm512_setzero_si512(), hi = _mm512_setzero_si512();
                for (int64_t ky = 0; ky < g->kh; ++ky) {
                    const int64_t iy = oy * g->sh - g->pt + ky * g->dh;
                    if (iy < 0 || iy >= g->h) continue;
                    for (int64_t kx = 0; kx < g->kw; ++kx) {
                        const int64_t ix = ox * g->sw - g->pl + kx * g->dw;
                        if (ix < 0 || ix >= g->w) continue;
                        const uint8_t *xp = a->x + ((b * g->h + iy) * g->w + ix) * c + ch;
                        const int8_t *wp = a->w + (ky * g->kw + kx) * c + ch;
                        const __m512i xv = _mm512_sub_epi16(_mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(mask, xp)), zx);
                        const __m512i wv = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(mask, wp));
                        const __m512i p = _mm512_mullo_epi16(xv, wv);
                        lo = _mm512_add_epi32(lo, _mm512_cvtepi16_epi32(_mm512_castsi512_si256(p)));
                        hi = _mm512_add_epi32(hi, _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(p, 1)));
                    }
                }
                _mm512_mask_storeu_epi32(acc + ch, (__mmask16)mask, lo);
                _mm512_mask_storeu_epi32(acc + ch + 16, (__mmask16)(mask >> 16), hi);
            }
            qgemm_output_avx512(acc, c, 1, c, row, 0, &a->os);
        }
    }
}
