/* Depthwise convolution built for the portable instruction set (body in depthwise_impl.h). */
#define DEPTHWISE_NAME depthwise_rows_portable
#define DEPTHWISE_OUTPUT qgemm_output_portable
#include "depthwise_impl.h"
