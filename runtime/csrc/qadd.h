/* Quantized elementwise add in ONNX Runtime's fp32 form:
 *   y = saturate(round_half_even(fma(a, s_a/s_y, fma(b, s_b/s_y, offset))))
 * with offset = z_y - (s_a/s_y * z_a + s_b/s_y * z_b), as MLAS computes it on x86.
 * Algebraically the QDQ reference Q(DQ(a) + DQ(b)); the pre-divided ratios round
 * differently on rare ties (at most one step), and following ORT there keeps deep residual
 * networks from drifting apart from it layer after layer. */
#ifndef COMPRESS_QADD_H
#define COMPRESS_QADD_H

#include <stdint.h>

typedef struct {
    float ratio_a, ratio_b; /* s_a / s_y, s_b / s_y */
    float offset;           /* z_y - (ratio_a * z_a + ratio_b * z_b) */
    int32_t lo, hi;         /* saturation bounds (output type, narrowed by a fused Relu/Clip) */
    int is_signed;          /* int8 data instead of uint8 */
} qadd_params;

/* y[i] = requant(a[i or 0] + b[i or 0]) for i < n (a_step/b_step 0 broadcasts a scalar). */
typedef void (*qadd_fn)(const void *a, int64_t a_step, const void *b, int64_t b_step, void *y, int64_t n,
                        const qadd_params *p);

void qadd_portable(const void *, int64_t, const void *, int64_t, void *, int64_t, const qadd_params *);
void qadd_fma(const void *, int64_t, const void *, int64_t, void *, int64_t, const qadd_params *);

/* QuantizeLinear of fp32 x with one scale, as runtime/qmath.py's quantize computes it:
 * y[i] = saturate(round_half_even(x[i] / scale) + zp) into [lo, hi] (the code type's range), the
 * fp32 division itself (not a reciprocal multiply); NaN gives 0, as numpy's cast does on x86.
 * One pass instead of numpy's six (the model's input: 150528 values for 3x224x224). */
typedef void (*quantize_fn)(const float *x, void *y, int64_t n, float scale, int32_t zp, int32_t lo, int32_t hi,
                            int is_signed);

void quantize_f32_portable(const float *, void *, int64_t, float, int32_t, int32_t, int32_t, int);
void quantize_f32_fma(const float *, void *, int64_t, float, int32_t, int32_t, int32_t, int);

#endif
