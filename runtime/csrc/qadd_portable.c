/* Quantized add, portable build (body in qadd_impl.h). */
#define QADD_NAME qadd_portable
#include "qadd_impl.h"
