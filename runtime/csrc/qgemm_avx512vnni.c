/* AVX-512 VNNI block kernel: a 6x64 register tile of int32 accumulators fed by vpdpbusd
 * (u8 x s8, four products summed per lane, no intermediate saturation), followed by the
 * output stage done in registers: add bias, scale in fp32, clamp, round half to even
 * (cvtps2dq in the default MXCSR mode), add the zero point, narrow to bytes. */
#include <immintrin.h>
#include <string.h>

#include "qgemm.h"

#define VNNI_MR 6
#define VNNI_NB 4 /* 16-column blocks per register tile */

static inline __attribute__((always_inline)) void store_tile(__m512i acc[VNNI_MR][VNNI_NB], int mr, int nb,
                                                             int64_t row0, int64_t col0, int64_t n,
                                                             const out_stage *os) {
    for (int j = 0; j < nb; ++j) {
        const int64_t c = col0 + 16 * j;
        const int64_t valid = n - c < 16 ? n - c : 16;
        const __mmask16 mask = (__mmask16)((1u << valid) - 1u);
        const __m512i bias = _mm512_maskz_loadu_epi32(mask, os->bias + c);
        if (os->mult == NULL) {
            for (int i = 0; i < mr; ++i)
                _mm512_mask_storeu_epi32((int32_t *)os->out + (row0 + i) * os->ldo + c, mask,
                                         _mm512_add_epi32(acc[i][j], bias));
            continue;
        }
        const __m512 mult = _mm512_maskz_loadu_ps(mask, os->mult + c);
        const __m512 flo = _mm512_set1_ps(os->flo), fhi = _mm512_set1_ps(os->fhi);
        const __m512i zy = _mm512_set1_epi32(os->zy);
        for (int i = 0; i < mr; ++i) {
            __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(acc[i][j], bias)), mult);
            f = _mm512_min_ps(_mm512_max_ps(f, flo), fhi);
            const __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(f), zy);
            _mm_mask_storeu_epi8((uint8_t *)os->out + (row0 + i) * os->ldo + c, mask, _mm512_cvtepi32_epi8(q));
        }
    }
}

static inline __attribute__((always_inline)) void kernel(const int8_t *blk, int64_t bstride, const uint8_t *a,
                                                         int64_t kp, int mr, int nb, int64_t row0, int64_t col0,
                                                         int64_t n, const out_stage *os) {
    __m512i acc[VNNI_MR][VNNI_NB];
    for (int i = 0; i < mr; ++i)
        for (int j = 0; j < nb; ++j) acc[i][j] = _mm512_setzero_si512();
    for (int64_t k = 0; k < kp; k += 4) {
        __m512i bv[VNNI_NB];
        for (int j = 0; j < nb; ++j) bv[j] = _mm512_loadu_si512(blk + j * bstride + k * QGEMM_NBLOCK);
        for (int i = 0; i < mr; ++i) {
            int32_t quad;
            memcpy(&quad, a + i * kp + k, 4);
            const __m512i av = _mm512_set1_epi32(quad);
            for (int j = 0; j < nb; ++j) acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], av, bv[j]);
        }
    }
    store_tile(acc, mr, nb, row0, col0, n, os);
}

#define CASE(MR, NB) \
    case (MR) * 8 + (NB): kernel(blk, bstride, a, kp, MR, NB, row0, col0, b->n, os); break;
#define CASES(MR) CASE(MR, 1) CASE(MR, 2) CASE(MR, 3) CASE(MR, 4)

void qgemm_block_avx512vnni(const packed_b *b, const uint8_t *abuf, int64_t rows, int64_t m0, int64_t nb0,
                            int64_t nb1, const out_stage *os) {
    const int64_t kp = b->kp, bstride = kp * QGEMM_NBLOCK;
    for (int64_t jb = nb0; jb < nb1; jb += VNNI_NB) {
        const int nb = nb1 - jb < VNNI_NB ? (int)(nb1 - jb) : VNNI_NB;
        const int8_t *blk = b->data + jb * bstride;
        const int64_t col0 = jb * QGEMM_NBLOCK;
        for (int64_t i = 0; i < rows; i += VNNI_MR) {
            const int mr = rows - i < VNNI_MR ? (int)(rows - i) : VNNI_MR;
            const uint8_t *a = abuf + i * kp;
            const int64_t row0 = m0 + i;
            switch (mr * 8 + nb) {
                CASES(1) CASES(2) CASES(3) CASES(4) CASES(5) CASES(6)
            }
        }
    }
}
