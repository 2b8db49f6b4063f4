/* Run-time choice of instruction set: what this CPU and OS allow. */
#ifndef COMPRESS_DISPATCH_H
#define COMPRESS_DISPATCH_H

/* 1 if the path (enum isa_path) can run here.  Asks the OS for the AMX tile state the first
 * time AMX is queried. */
int path_supported(int path);

/* The fastest supported path. */
int best_path(void);

#endif
