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

#include "outstage_impl.h" /* outstage_zmm and outstage_ymm_value only: the one output stage in registers */

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

/* The VNNI row kernel (windows of at most QUAD_KH_MAX x QUAD_KW_MAX taps, requantizing stages).
 * vpdpbusd sums 4 adjacent u8 x s8 products per dword exactly (no saturation: |sum| <= 4 * 255 *
 * 128), so the input is rearranged once per input row into "quads": for each output column ox
 * and channel, the dword of the (up to) 4 horizontal taps x[iy][ox * sw - pl + kx * dw][ch] (zx
 * where the column is padded).  An output pixel is then, per 32 channels, kh vpdpbusd on each of
 * 4 accumulators against weights held in registers: no shuffle per tap, each input row
 * rearranged once and read by every output row whose window covers it (kh slots cached by row).
 * The quads come out of vpunpck{l,h}bw / vpunpck{l,h}wd within 128-bit lanes, so the channels
 * are permuted (quad_channel in conv.c: weights, bias and multipliers are prepared in that
 * order) and the output stage's signed packs (vpackssdw, then vpack{s,u}swb) put them back in
 * order -- the values are already clamped into the output type, so the packs equal its byte
 * store. */

/* One output column's quads from its 4 taps' 32 input bytes each (zero beyond kw). */
static inline __attribute__((always_inline)) void quad_store(uint8_t *dst, __m256i t0, __m256i t1, __m256i t2,
                                                             __m256i t3) {
    const __m256i ab_lo = _mm256_unpacklo_epi8(t0, t1), ab_hi = _mm256_unpackhi_epi8(t0, t1);
    const __m256i cd_lo = _mm256_unpacklo_epi8(t2, t3), cd_hi = _mm256_unpackhi_epi8(t2, t3);
    _mm256_store_si256((__m256i *)dst, _mm256_unpacklo_epi16(ab_lo, cd_lo));
    _mm256_store_si256((__m256i *)(dst + 32), _mm256_unpackhi_epi16(ab_lo, cd_lo));
    _mm256_store_si256((__m256i *)(dst + 64), _mm256_unpacklo_epi16(ab_hi, cd_hi));
    _mm256_store_si256((__m256i *)(dst + 96), _mm256_unpackhi_epi16(ab_hi, cd_hi));
}

/* 32 channels of one tap; masked only at a channel tail (masked loads are slower on Zen 4). */
static inline __attribute__((always_inline)) __m256i quad_load(const uint8_t *p, int full, __mmask32 m) {
    return full ? _mm256_loadu_si256((const __m256i *)p) : _mm256_maskz_loadu_epi8(m, p);
}

/* Quads of channels [cb, cb + 32) of input row (b, iy) for every output column: ow * 128 bytes
 * at dst (4 vectors of 8 dwords per column).  Columns [ox_lo, ox_hi), whose taps all lie in the
 * row, step a pointer; the few edge columns test each tap.  kw is a constant in the specialised
 * calls. */
static inline __attribute__((always_inline)) void quad_row(const depthwise_args *a, int64_t b, int64_t iy,
                                                           int64_t cb, uint8_t *dst, const int64_t kw,
                                                           int64_t ox_lo, int64_t ox_hi) {
    const conv_geom *g = &a->g;
    const int64_t c = g->c, step = g->sw * c, tap = g->dw * c;
    const uint8_t *row = a->x + (b * g->h + iy) * g->w * c + cb;
    const int full = c - cb >= 32;
    const __mmask32 m = full ? 0xFFFFFFFFu : (__mmask32)((1u << (c - cb)) - 1u);
    const __m256i zxv = _mm256_set1_epi8((char)a->zx), zero = _mm256_setzero_si256();
    for (int64_t ox = 0; ox < g->ow; ++ox) {
        if (ox == ox_lo) { /* the interior run */
            const uint8_t *p = row + (ox * g->sw - g->pl) * c;
            for (; ox < ox_hi; ++ox, p += step)
                quad_store(dst + ox * 128, quad_load(p, full, m), kw > 1 ? quad_load(p + tap, full, m) : zero,
                           kw > 2 ? quad_load(p + 2 * tap, full, m) : zero,
                           kw > 3 ? quad_load(p + 3 * tap, full, m) : zero);
            if (ox >= g->ow) break;
        }
        __m256i t[4];
        for (int64_t kx = 0; kx < 4; ++kx) {
            const int64_t ix = ox * g->sw - g->pl + kx * g->dw;
            t[kx] = kx >= kw ? zero : ix < 0 || ix >= g->w ? zxv : quad_load(row + ix * c, full, m);
        }
        quad_store(dst + ox * 128, t[0], t[1], t[2], t[3]);
    }
}

/* Output rows [r0, r1) from the quads, one 32-channel step at a time (its kh quad rows, ow *
 * 128 bytes each, stay in L1/L2; kh and kw are constants in the specialised calls, so the kh * 4
 * weight vectors stay in registers across the step). */
static inline __attribute__((always_inline)) void quad_rows(const depthwise_args *a, int64_t r0, int64_t r1,
                                                            const depthwise_scratch *s, const int64_t kh,
                                                            const int64_t kw) {
    const conv_geom *g = &a->g;
    const out_stage *os = &a->os;
    const int64_t c = g->c, ow = g->ow, slot_bytes = ow * 128;
    const int is_signed = os->lo < 0;
    const __m256 flo = _mm256_set1_ps(os->flo), fhi = _mm256_set1_ps(os->fhi);
    const __m256i zy = _mm256_set1_epi32(os->zy);
    /* Columns whose taps all lie inside the row (as in rows_fused), worked out once: divisions
     * per quad row cost as much as a small row's rearrangement. */
    const int64_t ox_lo = (g->pl + g->sw - 1) / g->sw < ow ? (g->pl + g->sw - 1) / g->sw : ow;
    const int64_t last = g->w - 1 + g->pl - (kw - 1) * g->dw;
    const int64_t hi = last < 0 ? 0 : (last / g->sw + 1 < ow ? last / g->sw + 1 : ow);
    const int64_t ox_hi = hi > ox_lo ? hi : ox_lo;
    for (int64_t cb = 0; cb < a->cq; cb += 32) {
        const __m256i *wv = (const __m256i *)(a->wq + cb / 32 * kh * 128);
        __m256i w[QUAD_KH_MAX][4];
        for (int64_t ky = 0; ky < kh; ++ky)
            for (int k = 0; k < 4; ++k) w[ky][k] = _mm256_load_si256(wv + 4 * ky + k);
        const int32_t *bq = a->bq + cb;
        const float *mq = a->mq + cb;
        const int full = c - cb >= 32;
        const __mmask32 m = full ? 0xFFFFFFFFu : (__mmask32)((1u << (c - cb)) - 1u);
        int64_t tag[QUAD_KH_MAX]; /* input row (b * h + iy) whose quads each slot holds, -1: none */
        for (int64_t k = 0; k < kh; ++k) tag[k] = -1;
        /* (b, oy) of row r stepped, not divided: a division per row and step costs as much as a
         * 7-pixel row's multiplies. */
        for (int64_t r = r0, b = r0 / g->oh, oy = r0 % g->oh; r < r1; ++r, oy = oy + 1 == g->oh ? 0 : oy + 1,
                     b = oy == 0 ? b + 1 : b) {
            int64_t want[QUAD_KH_MAX];
            for (int64_t ky = 0; ky < kh; ++ky) {
                const int64_t iy = oy * g->sh - g->pt + ky * g->dh;
                want[ky] = iy < 0 || iy >= g->h ? -1 : b * g->h + iy;
            }
            const uint8_t *p[QUAD_KH_MAX];
            int64_t ostep[QUAD_KH_MAX];
            for (int64_t ky = 0; ky < kh; ++ky) {
                if (want[ky] < 0) { /* a padded row: every column reads the zx pixel */
                    p[ky] = a->zxq;
                    ostep[ky] = 0;
                    continue;
                }
                int64_t slot = -1;
                for (int64_t k = 0; k < kh; ++k)
                    if (tag[k] == want[ky]) slot = k;
                if (slot < 0) { /* a slot holding no row this output row reads (kh slots: one exists) */
                    for (int64_t k = 0; k < kh && slot < 0; ++k) {
                        int used = 0;
                        for (int64_t j = 0; j < kh; ++j) used |= tag[k] >= 0 && tag[k] == want[j];
                        if (!used) slot = k;
                    }
                    quad_row(a, b, want[ky] - b * g->h, cb, s->rows + slot * slot_bytes, kw, ox_lo, ox_hi);
                    tag[slot] = want[ky];
                }
                p[ky] = s->rows + slot * slot_bytes;
                ostep[ky] = 128;
            }
            uint8_t *out = (uint8_t *)os->out + r * ow * c + cb;
            for (int64_t ox = 0; ox < ow; ++ox, out += c) {
                __m256i acc0 = _mm256_setzero_si256(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
                for (int64_t ky = 0; ky < kh; ++ky) {
                    const __m256i *q = (const __m256i *)(p[ky] + ox * ostep[ky]);
                    acc0 = _mm256_dpbusd_epi32(acc0, _mm256_load_si256(q), w[ky][0]);
                    acc1 = _mm256_dpbusd_epi32(acc1, _mm256_load_si256(q + 1), w[ky][1]);
                    acc2 = _mm256_dpbusd_epi32(acc2, _mm256_load_si256(q + 2), w[ky][2]);
                    acc3 = _mm256_dpbusd_epi32(acc3, _mm256_load_si256(q + 3), w[ky][3]);
                }
                const __m256i v0 = outstage_ymm_value(acc0, bq, mq, flo, fhi, zy);
                const __m256i v1 = outstage_ymm_value(acc1, bq + 8, mq + 8, flo, fhi, zy);
                const __m256i v2 = outstage_ymm_value(acc2, bq + 16, mq + 16, flo, fhi, zy);
                const __m256i v3 = outstage_ymm_value(acc3, bq + 24, mq + 24, flo, fhi, zy);
                /* Within each 128-bit lane: v0 v1 hold channels 0-7, v2 v3 8-15 (quad_channel). */
                const __m256i p01 = _mm256_packs_epi32(v0, v1), p23 = _mm256_packs_epi32(v2, v3);
                const __m256i y = is_signed ? _mm256_packs_epi16(p01, p23) : _mm256_packus_epi16(p01, p23);
                if (full)
                    _mm256_storeu_si256((__m256i *)out, y);
                else
                    _mm256_mask_storeu_epi8(out, m, y);
            }
        }
    }
}

void depthwise_rows_avx512(const depthwise_args *a, int64_t r0, int64_t r1, const depthwise_scratch *s) {
    if (a->wq != NULL) {
        if (a->g.kh == 3 && a->g.kw == 3)
            quad_rows(a, r0, r1, s, 3, 3);
        else
            quad_rows(a, r0, r1, s, a->g.kh, a->g.kw);
        return;
    }
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
