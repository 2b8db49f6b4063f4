/* AVX-512 depthwise convolution: 32 channels per step in int16 lanes.  (x - zx) in
 * [-255, 255] times w in [-128, 127] fits int16 exactly (|p| <= 32640), so vpmullw is exact;
 * products are widened to int32 before accumulating.  The output stage is the same
 * vectorised requantization as the GEMM kernels (bit-identical to the portable path). */
#include <immintrin.h>

#include "conv.h"

static inline __mmask32 tail_mask(int64_t n) { return n >= 32 ? 0xFFFFFFFFu : (__mmask32)((1u << n) - 1u); }

static inline void store16(__m512i acc, int64_t ch, int64_t valid, const out_stage *os, int64_t row) {
    if (valid <= 0) return;
    const __mmask16 mask = valid >= 16 ? 0xFFFF : (__mmask16)((1u << valid) - 1u);
    const __m512i v = _mm512_add_epi32(acc, _mm512_maskz_loadu_epi32(mask, os->bias + ch));
    if (os->mult == NULL) {
        _mm512_mask_storeu_epi32((int32_t *)os->out + row * os->ldo + ch, mask, v);
        return;
    }
    __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(v), _mm512_maskz_loadu_ps(mask, os->mult + ch));
    f = _mm512_min_ps(_mm512_max_ps(f, _mm512_set1_ps(os->flo)), _mm512_set1_ps(os->fhi));
    const __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(f), _mm512_set1_epi32(os->zy));
    _mm_mask_storeu_epi8((uint8_t *)os->out + row * os->ldo + ch, mask, _mm512_cvtepi32_epi8(q));
}

void depthwise_rows_avx512(const depthwise_args *a, int64_t r0, int64_t r1, int32_t *scratch) {
    (void)scratch;
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
                store16(lo, ch, c - ch < 16 ? c - ch : 16, &a->os, row);
                store16(hi, ch + 16, c - ch - 16 < 16 ? c - ch - 16 : 16, &a->os, row);
            }
        }
    }
}
