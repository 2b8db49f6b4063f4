/* Depthwise convolution built for the avx512 instruction set (body in depthwise_impl.h). */
#define DEPTHWISE_NAME depthwise_rows_avx512
#include "depthwise_impl.h"
