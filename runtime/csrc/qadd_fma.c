/* Quantized add, AVX2+FMA build and QuantizeLinear (bodies in qadd_impl.h). */
#define QADD_NAME qadd_fma
#define QUANTIZE_NAME quantize_f32_fma
#include "qadd_impl.h"
