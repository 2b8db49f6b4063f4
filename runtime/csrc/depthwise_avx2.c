/* AVX2 depthwise convolution: 16 channels per step, two taps per instruction.  The input
 * bytes of taps t and t+1 are interleaved (vpunpck{l,h}bw) and widened to int16 pairs; vpmaddwd
 * against the pre-packed weight pairs (depthwise_pack) sums x_t * w_t + x_t+1 * w_t+1 exactly in
 * int32 (|x * w| <= 255 * 128).  Padded taps read a row of zx and the bias already holds
 * -zx * sum(w) (depthwise_run), so the sum equals the portable kernel's over in-image taps of
 * (x - zx) * w.  Then the one output stage (its AVX2 build) once per output row. */
#include <immintrin.h>
#include <string.h>

#include "conv.h"

/* Aligned to a cache line: its hot loop's placement moved with unrelated code and cost 2-5 %
 * (identical instructions, bench/kernel_ab.py on Zen 4). */
__attribute__((aligned(64))) void depthwise_rows_avx2(const depthwise_args *a, int64_t r0, int64_t r1,
                                                     const depthwise_scratch *s) {
    const conv_geom *g = &a->g;
    const int64_t c = g->c, taps = g->kh * g->kw, pairs = (taps + 1) / 2;
    for (int64_t r = r0; r < r1; ++r) {
        const int64_t b = r / g->oh, oy = r % g->oh;
        for (int64_t ox = 0; ox < g->ow; ++ox) {
            int32_t *acc = s->acc + ox * c;
            depthwise_all_taps(a, b, oy, ox, s);
            const int16_t *w = a->wpk;
            for (int64_t ch = 0; ch < c; ch += 16) {
                const int64_t valid = c - ch < 16 ? c - ch : 16;
                __m256i lo = _mm256_setzero_si256(), hi = _mm256_setzero_si256();
                for (int64_t p = 0; p < pairs; ++p, w += 32) {
                    __m128i x0, x1 = _mm_setzero_si128();
                    if (valid == 16) {
                        x0 = _mm_loadu_si128((const __m128i *)(s->xp[2 * p] + ch));
                        if (2 * p + 1 < taps) x1 = _mm_loadu_si128((const __m128i *)(s->xp[2 * p + 1] + ch));
                    } else {
                        uint8_t b0[16] = {0}, b1[16] = {0};
                        memcpy(b0, s->xp[2 * p] + ch, (size_t)valid);
                        if (2 * p + 1 < taps) memcpy(b1, s->xp[2 * p + 1] + ch, (size_t)valid);
                        x0 = _mm_loadu_si128((const __m128i *)b0);
                        x1 = _mm_loadu_si128((const __m128i *)b1);
                    }
                    const __m256i plo = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(x0, x1)); /* channels 0-7 */
                    const __m256i phi = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(x0, x1)); /* channels 8-15 */
                    lo = _mm256_add_epi32(lo, _mm256_madd_epi16(plo, _mm256_load_si256((const __m256i *)w)));
                    hi = _mm256_add_epi32(hi, _mm256_madd_epi16(phi, _mm256_load_si256((const __m256i *)(w + 16))));
                }
                if (valid == 16) {
                    _mm256_storeu_si256((__m256i *)(acc + ch), lo);
                    _mm256_storeu_si256((__m256i *)(acc + ch + 8), hi);
                } else {
                    int32_t tmp[16];
                    _mm256_storeu_si256((__m256i *)tmp, lo);
                    _mm256_storeu_si256((__m256i *)(tmp + 8), hi);
                    memcpy(acc + ch, tmp, (size_t)valid * sizeof(int32_t));
                }
            }
        }
        qgemm_output_avx2(s->acc, c, g->ow, c, r * g->ow, 0, &a->os);
    }
}
