/* Depthwise convolution built for the avx2 instruction set (body in depthwise_impl.h). */
#define DEPTHWISE_NAME depthwise_rows_avx2
#define DEPTHWISE_OUTPUT qgemm_output_avx2
#include "depthwise_impl.h"
