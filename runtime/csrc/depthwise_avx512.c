/* AVX-512 depthwise convolution: 32 channels per step, the AVX2 kernel's scheme at twice the
 * width.  The input bytes of taps t and t+1 are interleaved (256-bit vpunpck{l,h}bw, within
 * 128-bit lanes) and widened to int16 pairs; vpmaddwd against the pre-packed weight pairs
 * (depthwise_pack) sums x_t * w_t + x_t+1 * w_t+1 exactly in int32.  One accumulator then holds
 * channels {0-7, 16-23}, the other {8-15, 24-31}; vshufi64x2 restores the order once per step.
 * Padded taps read a row of zx and the bias holds -zx * sum(w) (depthwise_run).  Masked loads
 * and stores handle a channel tail.  Requantizing outputs of windows up to FUSED_TAPS_MAX taps
 * take rows_fused (the output stage from registers); others (and int32 outputs) the one output
 * stage (its AVX-512 build) once per output row. */
#include <immintrin.h>

#include "conv.h"

#include "outstage_impl.h" /* outstage_zmm only: the one output stage on 16 lanes */

/* Windows of at most this many taps take the fused kernel below. */
#define FUSED_TAPS_MAX 25

/* One 32-channel group of every tap pair: exact vpmaddwd of (x0, x1) byte pairs widened to int16 against the
 * packed weight pairs; the int32 sums come out lane-interleaved in *lo and *hi (the callers' 64-bit shuffles
 * put channels 0-15 and 16-31 back in order). Shared by the fused and the int32-row kernels; returns the
 * weights of the next group. */
static inline const int16_t *tap_pairs(const depthwise_scratch *s, const int16_t *w, int64_t ch, int full,
                                       __mmask32 m, int64_t taps, int64_t pairs, __m512i *lo, __m512i *hi) {
    __m512i l = _mm512_setzero_si512(), h = _mm512_setzero_si512();
    for (int64_t p = 0; p < pairs; ++p, w += 64) {
        /* Masked loads only for a channel tail: they are slower on Zen 4. */
        const __m256i x0 = full ? _mm256_loadu_si256((const __m256i *)(s->xp[2 * p] + ch))
                                : _mm256_maskz_loadu_epi8(m, s->xp[2 * p] + ch);
        const __m256i x1 = 2 * p + 1 >= taps ? _mm256_setzero_si256()
                           : full ? _mm256_loadu_si256((const __m256i *)(s->xp[2 * p + 1] + ch))
                                  : _mm256_maskz_loadu_epi8(m, s->xp[2 * p + 1] + ch);
        const __m512i plo = _mm512_cvtepu8_epi16(_mm256_unpacklo_epi8(x0, x1));
        const __m512i phi = _mm512_cvtepu8_epi16(_mm256_unpackhi_epi8(x0, x1));
        l = _mm512_add_epi32(l, _mm512_madd_epi16(plo, _mm512_load_si512(w)));
        h = _mm512_add_epi32(h, _mm512_madd_epi16(phi, _mm512_load_si512(w + 32)));
    }
    *lo = l;
    *hi = h;
    return w;
}

/* The same sums with the output stage fused: per output pixel, each 32-channel step is
 * requantized from its accumulators and stored as bytes (no int32 row).  The tap pointers of a
 * pixel whose window lies inside the image horizontally are a per-row base plus ox times a
 * per-row step (a padded row's taps stay on the zx row); only the few edge pixels collect them
 * tap by tap. */
static void rows_fused(const depthwise_args *a, int64_t r0, int64_t r1, const depthwise_scratch *s) {
    const conv_geom *g = &a->g;
    const out_stage *os = &a->os;
    const int64_t c = g->c, taps = g->kh * g->kw, pairs = (taps + 1) / 2;
    const __m512 flo = _mm512_set1_ps(os->flo), fhi = _mm512_set1_ps(os->fhi);
    const __m512i zy = _mm512_set1_epi32(os->zy);
    /* Interior columns: ox * sw - pl >= 0 and ox * sw - pl + (kw - 1) * dw <= w - 1. */
    const int64_t ox_lo = (g->pl + g->sw - 1) / g->sw;
    const int64_t last = g->w - 1 + g->pl - (g->kw - 1) * g->dw;
    const int64_t ox_hi = last < 0 ? 0 : (last / g->sw + 1 < g->ow ? last / g->sw + 1 : g->ow);
    const uint8_t *base[FUSED_TAPS_MAX];
    int64_t off[FUSED_TAPS_MAX], step[FUSED_TAPS_MAX];
    for (int64_t r = r0; r < r1; ++r) {
        const int64_t b = r / g->oh, oy = r % g->oh;
        for (int64_t t = 0; t < taps; ++t) {
            const int64_t ky = t / g->kw, kx = t % g->kw, iy = oy * g->sh - g->pt + ky * g->dh;
            const int inside = iy >= 0 && iy < g->h;
            base[t] = inside ? a->x + (b * g->h + iy) * g->w * c : a->zxrow;
            off[t] = inside ? (kx * g->dw - g->pl) * c : 0;
            step[t] = inside ? g->sw * c : 0;
        }
        for (int64_t ox = 0; ox < g->ow; ++ox) {
            if (ox < ox_lo || ox >= ox_hi)
                depthwise_all_taps(a, b, oy, ox, s);
            else
                for (int64_t t = 0; t < taps; ++t) s->xp[t] = base[t] + (off[t] + ox * step[t]);
            uint8_t *out = (uint8_t *)os->out + (r * g->ow + ox) * os->ldo;
            const int16_t *w = a->wpk;
            for (int64_t ch = 0; ch < c; ch += 32) {
                const int full = c - ch >= 32;
                const __mmask32 m = full ? 0xFFFFFFFFu : (__mmask32)((1u << (c - ch)) - 1u);
                __m512i lo, hi;
                w = tap_pairs(s, w, ch, full, m, taps, pairs, &lo, &hi);
                outstage_zmm(_mm512_shuffle_i64x2(lo, hi, 0x44), os->bias + ch, os->mult + ch, (__mmask16)m, flo,
                             fhi, zy, out + ch);
                outstage_zmm(_mm512_shuffle_i64x2(lo, hi, 0xEE), os->bias + ch + 16, os->mult + ch + 16,
                             (__mmask16)(m >> 16), flo, fhi, zy, out + ch + 16);
            }
        }
    }
}

void depthwise_rows_avx512(const depthwise_args *a, int64_t r0, int64_t r1, const depthwise_scratch *s) {
    if (a->os.mult != NULL && a->g.kh * a->g.kw <= FUSED_TAPS_MAX) {
        rows_fused(a, r0, r1, s);
        return;
    }
    const conv_geom *g = &a->g;
    const int64_t c = g->c, taps = g->kh * g->kw, pairs = (taps + 1) / 2;
    for (int64_t r = r0; r < r1; ++r) {
        const int64_t b = r / g->oh, oy = r % g->oh;
        for (int64_t ox = 0; ox < g->ow; ++ox) {
            int32_t *acc = s->acc + ox * c;
            depthwise_all_taps(a, b, oy, ox, s);
            const int16_t *w = a->wpk;
            for (int64_t ch = 0; ch < c; ch += 32) {
                const int full = c - ch >= 32;
                const __mmask32 m = full ? 0xFFFFFFFFu : (__mmask32)((1u << (c - ch)) - 1u);
                __m512i lo, hi;
                w = tap_pairs(s, w, ch, full, m, taps, pairs, &lo, &hi);
                const __m512i out0 = _mm512_shuffle_i64x2(lo, hi, 0x44); /* channels 0-15 */
                const __m512i out1 = _mm512_shuffle_i64x2(lo, hi, 0xEE); /* channels 16-31 */
                _mm512_mask_storeu_epi32(acc + ch, (__mmask16)m, out0);
                _mm512_mask_storeu_epi32(acc + ch + 16, (__mmask16)(m >> 16), out1);
            }
        }
        qgemm_output_avx512(s->acc, c, g->ow, c, r * g->ow, 0, &a->os);
    }
}
