/* Quantized add and QuantizeLinear bodies, included by qadd_portable.c and qadd_fma.c (built
 * with -mavx2 -mfma, where fmaf becomes one vectorised instruction).  fmaf rounds once in both
 * builds, so the two are bit-identical.  Define QADD_NAME and QUANTIZE_NAME before including. */
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

/* x / scale, NaN replaced by -zp (so it lands on 0), clamped to [lo - zp, hi - zp] -- integer
 * bounds, so clamping before rounding equals numpy's clip after it, and infinities saturate --
 * then rounded half to even (nearbyintf, the default rounding mode) and zp added. */
static inline int32_t quantize_one(float x, float scale, float flo, float fhi, float nan_to, int32_t zp) {
    float v = x / scale;
    v = v == v ? v : nan_to;
    v = v < flo ? flo : v;
    v = v > fhi ? fhi : v;
    return (int32_t)nearbyintf(v) + zp;
}

void QUANTIZE_NAME(const float *x, void *y, int64_t n, float scale, int32_t zp, int32_t lo, int32_t hi,
                   int is_signed) {
    const float flo = (float)(lo - zp), fhi = (float)(hi - zp), nan_to = (float)-zp;
    if (is_signed) {
        int8_t *py = y;
        for (int64_t i = 0; i < n; ++i) py[i] = (int8_t)quantize_one(x[i], scale, flo, fhi, nan_to, zp);
    } else {
        uint8_t *py = y;
        for (int64_t i = 0; i < n; ++i) py[i] = (uint8_t)quantize_one(x[i], scale, flo, fhi, nan_to, zp);
    }
}
