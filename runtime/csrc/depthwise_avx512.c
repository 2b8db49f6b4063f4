/* AVX-512 depthwise convolution: 32 channels per step, the AVX2 kernel's scheme at twice the
 * width.  The input bytes of taps t and t+1 are interleaved (256-bit vpunpck{l,h}bw, within
 * 128-bit lanes) and widened to int16 pairs; vpmaddwd against the pre-packed weight pairs
 * (depthwise_pack) sums x_t * w_t + x_t+1 * w_t+1 exactly in int32.  One accumulator then holds
 * channels {0-7, 16-23}, the other {8-15, 24-31}; vshufi64x2 restores the order once per step.
 * Padded taps read a row of zx and the bias holds -zx * sum(w) (depthwise_run).  Masked loads
 * and stores handle a channel tail.  Then the one output stage (its AVX-512 build) once per
 * output row. */
#include <immintrin.h>

#include "conv.h"

void depthwise_rows_avx512(const depthwise_args *a, int64_t r0, int64_t r1, const depthwise_scratch *s) {
    const conv_geom *g = &a->g;
    const int64_t c = g->c, taps = g->kh * g->kw, pairs = (taps + 1) / 2;
    for (int64_t r = r0; r < r1; ++r) {
        const int64_t b = r / g->oh, oy = r % g->oh;
        for (int64_t ox = 0; ox < g->ow; ++ox) {
            int32_t *acc = s->acc + ox * c;
            depthwise_all_taps(a, b, oy, ox, s);
            const int16_t *w = a->wpk;
            for (int64_t ch = 0; ch < c; ch += 32) {
                const __mmask32 m = c - ch >= 32 ? 0xFFFFFFFFu : (__mmask32)((1u << (c - ch)) - 1u);
                __m512i lo = _mm512_setzero_si512(), hi = _mm512_setzero_si512();
                for (int64_t p = 0; p < pairs; ++p, w += 64) {
                    const __m256i x0 = _mm256_maskz_loadu_epi8(m, s->xp[2 * p] + ch);
                    const __m256i x1 =
                        2 * p + 1 < taps ? _mm256_maskz_loadu_epi8(m, s->xp[2 * p + 1] + ch) : _mm256_setzero_si256();
                    const __m512i plo = _mm512_cvtepu8_epi16(_mm256_unpacklo_epi8(x0, x1));
                    const __m512i phi = _mm512_cvtepu8_epi16(_mm256_unpackhi_epi8(x0, x1));
                    lo = _mm512_add_epi32(lo, _mm512_madd_epi16(plo, _mm512_load_si512(w)));
                    hi = _mm512_add_epi32(hi, _mm512_madd_epi16(phi, _mm512_load_si512(w + 32)));
                }
                const __m512i out0 = _mm512_shuffle_i64x2(lo, hi, 0x44); /* channels 0-15 */
                const __m512i out1 = _mm512_shuffle_i64x2(lo, hi, 0xEE); /* channels 16-31 */
                _mm512_mask_storeu_epi32(acc + ch, (__mmask16)m, out0);
                _mm512_mask_storeu_epi32(acc + ch + 16, (__mmask16)(m >> 16), out1);
            }
        }
        qgemm_output_avx512(s->acc, c, g->ow, c, r * g->ow, 0, &a->os);
    }
}
