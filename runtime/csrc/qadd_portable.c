/* Quantized add, portable build and QuantizeLinear (bodies in qadd_impl.h). */
#define QADD_NAME qadd_portable
#define QUANTIZE_NAME quantize_f32_portable
#include "qadd_impl.h"
