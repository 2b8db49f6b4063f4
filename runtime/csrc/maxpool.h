/* NHWC 8-bit max pooling (see maxpool.c). */
#ifndef COMPRESS_MAXPOOL_H
#define COMPRESS_MAXPOOL_H

#include <stdint.h>

#include "conv.h"

typedef struct {
    const void *x;
    void *out;
    conv_geom g; /* window geometry; every window must hold at least one in-image tap */
    int is_signed;
    int64_t tasks;
} maxpool_args;

void maxpool_run(maxpool_args *a, int nthreads);

#endif
