/* CPU feature detection (see dispatch.h).  AVX2/AVX-512 come from __builtin_cpu_supports,
 * which also checks that the OS saves the wider registers; AMX additionally needs Linux to
 * grant the 8 KiB tile-data state to this process (arch_prctl ARCH_REQ_XCOMP_PERM).
 * Builds for other architectures (no COMPRESS_X86) offer the portable path only. */
#include "dispatch.h"

#include "qgemm.h"

#if defined(COMPRESS_X86)
#include <cpuid.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18
#endif

static int amx_state = -1; /* -1 unknown, 0 no, 1 yes */

static int amx_available(void) {
    if (amx_state >= 0) return amx_state;
    amx_state = 0;
    unsigned eax, ebx, ecx, edx;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return 0;
    const int tile = (edx >> 24) & 1, int8 = (edx >> 25) & 1;
    if (!tile || !int8) return 0;
#if defined(__linux__)
    if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0) amx_state = 1;
#endif
    return amx_state;
}

int path_supported(int path) {
    __builtin_cpu_init();
    switch (path) {
    case PATH_PORTABLE:
        return 1;
    case PATH_AVX2:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case PATH_AVX512VNNI:
        return __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl");
    case PATH_AMX:
        return path_supported(PATH_AVX512VNNI) && amx_available();
    default:
        return 0;
    }
}
#else
int path_supported(int path) { return path == PATH_PORTABLE; }
#endif

int best_path(void) {
    for (int p = PATH_COUNT - 1; p > 0; --p)
        if (path_supported(p)) return p;
    return PATH_PORTABLE;
}
