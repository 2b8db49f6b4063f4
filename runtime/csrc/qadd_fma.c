/* Quantized add, AVX2+FMA build (body in qadd_impl.h). */
#define QADD_NAME qadd_fma
#include "qadd_impl.h"
