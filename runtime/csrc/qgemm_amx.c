/* AMX block kernel (Sapphire Rapids and later): 2x2 tiles of 16x16 int32 accumulators,
 * tdpbusd over 64-deep slices.  A tiles come straight from the kp-strided A block (rows
 * padded to 32 by the driver), B tiles are 1 KiB slices of the packed weights.  The
 * accumulators go through a small int32 scratch into the one output stage (its AVX-512
 * build).  The OS must grant the tile state first (arch_prctl, see dispatch.c). */
#include <immintrin.h>
#include <string.h>

#include "qgemm.h"

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

static void configure_tiles(void) {
    tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; ++t) {
        cfg.colsb[t] = 64;
        cfg.rows[t] = 16;
    }
    _tile_loadconfig(&cfg);
}

static void block(const qgemm_isa *isa, const packed_b *b, const void *abuf_, int64_t rows, int64_t m0, int64_t nb0,
                  int64_t nb1, const out_stage *os) {
    const uint8_t *abuf = abuf_;
    const int64_t kp = b->kp, bstride = kp * QGEMM_NBLOCK;
    int32_t scratch[32 * 32] __attribute__((aligned(64)));
    configure_tiles();
    for (int64_t jb = nb0; jb < nb1; jb += 2) {
        const int two_cols = nb1 - jb >= 2;
        const int8_t *blk = b->data + jb * bstride;
        const int64_t col0 = jb * QGEMM_NBLOCK;
        const int64_t ncols = (b->n - col0 < 32 ? b->n - col0 : 32);
        for (int64_t i = 0; i < rows; i += 32) {
            const int two_rows = rows - i > 16;
            const uint8_t *a = abuf + i * kp;
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            for (int64_t k = 0; k < kp; k += 64) {
                _tile_loadd(4, a + k, kp);
                _tile_loadd(6, blk + k * QGEMM_NBLOCK, 64);
                _tile_dpbusd(0, 4, 6);
                if (two_cols) {
                    _tile_loadd(7, blk + bstride + k * QGEMM_NBLOCK, 64);
                    _tile_dpbusd(1, 4, 7);
                }
                if (two_rows) {
                    _tile_loadd(5, a + 16 * kp + k, kp);
                    _tile_dpbusd(2, 5, 6);
                    if (two_cols) _tile_dpbusd(3, 5, 7);
                }
            }
            _tile_stored(0, scratch, 128);
            _tile_stored(1, scratch + 16, 128);
            _tile_stored(2, scratch + 16 * 32, 128);
            _tile_stored(3, scratch + 16 * 32 + 16, 128);
            const int64_t nrows = rows - i < 32 ? rows - i : 32;
            isa->output(scratch, 32, nrows, two_cols ? ncols : (ncols < 16 ? ncols : 16), m0 + i, col0, os);
        }
    }
    _tile_release();
}

const qgemm_isa qgemm_isa_amx = {
    .mr = 32,
    .nb = 2,
    .kalign = QGEMM_KALIGN,
    .block = block,
    .output = qgemm_output_avx512,
};
