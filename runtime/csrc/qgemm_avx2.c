/* AVX2 block kernel for CPUs without VNNI.
 *
 * vpmaddubsw would multiply u8 x s8 pairs into a saturating int16 (255*127*2 overflows), so
 * this path never uses it: both operands are widened to int16 first (vpmovzx/vpmovsxbw) and
 * multiplied with vpmaddwd, whose int32 pair sums cannot overflow.  Each column keeps two
 * partial sums (k%4 in {0,1} and {2,3}) that are folded once at the end.  Half the
 * throughput of maddubsw, but exact for every input.
 */
#include <immintrin.h>
#include <string.h>

#include "qgemm.h"

#define AVX2_MR 2

static inline __attribute__((always_inline)) void kernel(const int8_t *blk, const uint8_t *abuf, int64_t kp,
                                                         int mr, int32_t out[AVX2_MR][QGEMM_NBLOCK]) {
    __m256i acc[AVX2_MR][4];
    for (int i = 0; i < mr; ++i)
        for (int q = 0; q < 4; ++q) acc[i][q] = _mm256_setzero_si256();
    for (int64_t k = 0; k < kp; k += 4) {
        const int8_t *bk = blk + k * QGEMM_NBLOCK;
        __m256i bw[4];
        for (int q = 0; q < 4; ++q) bw[q] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(bk + 16 * q)));
        for (int i = 0; i < mr; ++i) {
            uint32_t quad;
            memcpy(&quad, abuf + i * kp + k, 4);
            const __m256i aw = _mm256_broadcastq_epi64(_mm_cvtepu8_epi16(_mm_cvtsi32_si128((int)quad)));
            for (int q = 0; q < 4; ++q) acc[i][q] = _mm256_add_epi32(acc[i][q], _mm256_madd_epi16(aw, bw[q]));
        }
    }
    for (int i = 0; i < mr; ++i) {
        /* acc[q] holds (col 4q+c: sum k%4<2, sum k%4>=2) pairs; hadd folds them, permute restores order. */
        __m256i lo = _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[i][0], acc[i][1]), 0xD8);
        __m256i hi = _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[i][2], acc[i][3]), 0xD8);
        _mm256_storeu_si256((__m256i *)out[i], lo);
        _mm256_storeu_si256((__m256i *)(out[i] + 8), hi);
    }
}

void qgemm_block_avx2(const packed_b *b, const uint8_t *abuf, int64_t rows, int64_t m0, int64_t nb0,
                      int64_t nb1, const out_stage *os) {
    const int64_t kp = b->kp;
    for (int64_t jb = nb0; jb < nb1; ++jb) {
        const int8_t *blk = b->data + jb * kp * QGEMM_NBLOCK;
        const int64_t col0 = jb * QGEMM_NBLOCK;
        const int64_t ncols = b->n - col0 < QGEMM_NBLOCK ? b->n - col0 : QGEMM_NBLOCK;
        for (int64_t i = 0; i < rows; i += AVX2_MR) {
            int32_t acc[AVX2_MR][QGEMM_NBLOCK];
            const int mr = rows - i < AVX2_MR ? (int)(rows - i) : AVX2_MR;
            if (mr == AVX2_MR)
                kernel(blk, abuf + i * kp, kp, AVX2_MR, acc);
            else
                kernel(blk, abuf + i * kp, kp, 1, acc);
            for (int r = 0; r < mr; ++r) qgemm_store_row(acc[r], m0 + i + r, col0, ncols, os);
        }
    }
}
