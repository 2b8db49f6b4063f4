/* Quantized add body, included by qadd_portable.c and qadd_fma.c (built with -mavx2 -mfma,
 * where fmaf becomes one vectorised instruction).  fmaf rounds once in both builds, so the
 * two are bit-identical.  Define QADD_NAME before including. */
#include <math.h>

#include "qadd.h"

static inline int32_t requant(float a, float b, const qadd_params *p) {
    const float f = fmaf(a, p->ratio_a, fmaf(b, p->ratio_b, p->offset));
    const int32_t y = (int32_t)nearbyintf(f < -1e9f ? -1e9f : (f > 1e9f ? 1e9f : f));
    return y < p->lo ? p->lo : (y > p->hi ? p->hi : y);
}

void QADD_NAME(const void *a, int64_t a_step, const void *b, int64_t b_step, void *y, int64_t n,
               const qadd_params *p) {
    if (p->is_signed) {
        const int8_t *pa = a, *pb = b;
        int8_t *py = y;
        if (a_step == 1 && b_step == 1)
            for (int64_t i = 0; i < n; ++i) py[i] = (int8_t)requant(pa[i], pb[i], p);
        else
            for (int64_t i = 0; i < n; ++i) py[i] = (int8_t)requant(pa[i * a_step], pb[i * b_step], p);
    } else {
        const uint8_t *pa = a, *pb = b;
        uint8_t *py = y;
        if (a_step == 1 && b_step == 1) /* residual adds: unit strides, so the loop vectorises fully */
            for (int64_t i = 0; i < n; ++i) py[i] = (uint8_t)requant(pa[i], pb[i], p);
        else
            for (int64_t i = 0; i < n; ++i) py[i] = (uint8_t)requant(pa[i * a_step], pb[i * b_step], p);
    }
}
