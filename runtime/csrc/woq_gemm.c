/* runtime._woq: weight-only quantized GEMM (com.microsoft MatMulNBits), its own extension.
 *
 * Y (M, N) = A (M, K) fp32 @ dequant(B)^T + bias, B given as N rows of ceil(K/block) blocks of
 * 4-bit (two codes a byte, low nibble first) or 8-bit unsigned codes, each block with an fp32
 * scale and zero point: w = (q - z) * s, exactly as ONNX Runtime defines the op.
 *
 * The weights are never dequantized as a whole: a tile of NT output columns is unpacked into
 * a K x NT fp32 buffer (a few dozen KiB, stays in L2) and consumed at once by a register-
 * blocked micro-kernel (4 rows x NT columns of accumulators), then the next tile is unpacked.
 * The hot loops are plain C compiled for AVX-512, AVX2+FMA and baseline x86-64 (GCC's
 * target_clones picks one at load time); fewer than 4 rows (token-by-token decoding) skip the
 * tile and decode each block straight into an AVX2 dot product when the CPU has AVX2+FMA, or a
 * plain loop otherwise (and on other architectures).
 *
 * Every size is checked with overflow-checked 64-bit arithmetic against the buffers Python
 * passed before a pointer is touched; the GIL is released while computing.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NT 16
#define MAX_THREADS 256

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CLONES
#endif

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_AVX2_DOT 1

/* sum_t (q_t - z) * a_t over len (a multiple of 16) codes, 4- or 8-bit, on AVX2+FMA. */
__attribute__((target("avx2,fma"))) static float dot_codes_avx2(const uint8_t *p, const float *a, int64_t len,
                                                                 float z, int bits) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    const __m256 vz = _mm256_set1_ps(z);
    const __m128i nibble = _mm_set1_epi8(0x0F);
    for (int64_t t = 0; t < len; t += 16) {
        __m128i codes;
        if (bits == 4) {
            const __m128i bytes = _mm_loadl_epi64((const __m128i *)(p + (t >> 1)));
            codes = _mm_unpacklo_epi8(_mm_and_si128(bytes, nibble), _mm_and_si128(_mm_srli_epi16(bytes, 4), nibble));
        } else {
            codes = _mm_loadu_si128((const __m128i *)(p + t));
        }
        const __m256 w0 = _mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(codes)), vz);
        const __m256 w1 = _mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(codes, 8))), vz);
        acc0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(a + t), acc0);
        acc1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(a + t + 8), acc1);
    }
    const __m256 sum = _mm256_add_ps(acc0, acc1);
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps(sum, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    return _mm_cvtss_f32(h);
}
#endif

typedef struct {
    const float *a;
    const uint8_t *b;
    const float *scales, *zeros, *bias;
    float *y;
    int64_t m, k, n, blocks, block, blob;
    int bits;
    int avx2; /* the CPU has AVX2 and FMA: the few-rows path uses dot_codes_avx2 */
    int64_t col_begin, col_end; /* tile range [begin, end) in units of NT columns */
    int failed;
} woq_job;

static inline int code_at(const uint8_t *p, int64_t t, int bits) {
    return bits == 4 ? (p[t >> 1] >> ((t & 1) * 4)) & 15 : p[t];
}

/* Unpacks columns n0 .. n0+nt-1 into wt[k * NT + j] (columns past nt are zero); each step
 * writes NT consecutive floats, reading the nt packed rows side by side. */
static void unpack_tile(const woq_job *j, int64_t n0, int nt, float *wt) {
    if (nt < NT) memset(wt, 0, sizeof(float) * (size_t)(j->k * NT));
    for (int64_t blk = 0; blk < j->blocks; ++blk) {
        float s[NT], z[NT];
        const uint8_t *p[NT];
        for (int c = 0; c < nt; ++c) {
            const int64_t idx = (n0 + c) * j->blocks + blk;
            s[c] = j->scales[idx];
            z[c] = j->zeros[idx];
            p[c] = j->b + idx * j->blob;
        }
        const int64_t k0 = blk * j->block;
        const int64_t len = (k0 + j->block <= j->k) ? j->block : j->k - k0;
        for (int64_t t = 0; t < len; ++t) {
            float *dst = wt + (k0 + t) * NT;
            for (int c = 0; c < nt; ++c) dst[c] = ((float)code_at(p[c], t, j->bits) - z[c]) * s[c];
        }
    }
}

/* Fewer than 4 rows (token-by-token decoding): no tile buffer, each column's blocks are decoded
 * straight into the dot products, y[r, n] = sum_blocks s * sum_t (q_t - z) * a[r, t]. */
CLONES static void gemv_columns(const woq_job *j, int64_t n_begin, int64_t n_end) {
    for (int64_t n = n_begin; n < n_end; ++n) {
        float acc[4] = {0, 0, 0, 0};
        for (int64_t blk = 0; blk < j->blocks; ++blk) {
            const int64_t idx = n * j->blocks + blk, k0 = blk * j->block;
            const int64_t len = (k0 + j->block <= j->k) ? j->block : j->k - k0;
            const uint8_t *p = j->b + idx * j->blob;
            const float z = j->zeros[idx];
            for (int64_t r = 0; r < j->m; ++r) {
                const float *a = j->a + r * j->k + k0;
                float lane[16] = {0}, w[16], part = 0.0f;
                int64_t t = 0;
#ifdef HAVE_AVX2_DOT
                if (j->avx2) {
                    t = len / 16 * 16;
                    part = dot_codes_avx2(p, a, t, z, j->bits);
                }
#endif
                for (; t + 16 <= len; t += 16) { /* 16 independent lanes: vectorizes without reassociation */
                    if (j->bits == 4) {
                        const uint8_t *pp = p + (t >> 1);
                        for (int u = 0; u < 8; ++u) {
                            w[2 * u] = (float)(pp[u] & 15) - z;
                            w[2 * u + 1] = (float)(pp[u] >> 4) - z;
                        }
                    } else {
                        for (int u = 0; u < 16; ++u) w[u] = (float)p[t + u] - z;
                    }
                    for (int u = 0; u < 16; ++u) lane[u] += w[u] * a[t + u];
                }
                for (; t < len; ++t) part += ((float)code_at(p, t, j->bits) - z) * a[t];
                for (int u = 0; u < 16; ++u) part += lane[u];
                acc[r] += part * j->scales[idx];
            }
        }
        for (int64_t r = 0; r < j->m; ++r) j->y[r * j->n + n] = acc[r] + (j->bias ? j->bias[n] : 0.0f);
    }
}

/* y[r, 0:nt] = a[r, :] @ wt for rows r0 .. r0+rows-1 (rows <= 4). */
CLONES static void micro_kernel(const float *a, int64_t lda, const float *wt, int64_t k, int rows, float *y,
                                int64_t ldy, int nt, const float *bias) {
    float acc[4][NT];
    memset(acc, 0, sizeof(acc));
    if (rows == 4) {
        const float *a0 = a, *a1 = a + lda, *a2 = a + 2 * lda, *a3 = a + 3 * lda;
        for (int64_t kk = 0; kk < k; ++kk) {
            const float *w = wt + kk * NT;
            const float v0 = a0[kk], v1 = a1[kk], v2 = a2[kk], v3 = a3[kk];
            for (int c = 0; c < NT; ++c) {
                acc[0][c] += v0 * w[c];
                acc[1][c] += v1 * w[c];
                acc[2][c] += v2 * w[c];
                acc[3][c] += v3 * w[c];
            }
        }
    } else {
        for (int r = 0; r < rows; ++r)
            for (int64_t kk = 0; kk < k; ++kk) {
                const float *w = wt + kk * NT;
                const float v = a[r * lda + kk];
                for (int c = 0; c < NT; ++c) acc[r][c] += v * w[c];
            }
    }
    for (int r = 0; r < rows; ++r)
        for (int c = 0; c < nt; ++c) y[r * ldy + c] = acc[r][c] + (bias ? bias[c] : 0.0f);
}

static void *run_job(void *arg) {
    woq_job *j = (woq_job *)arg;
    if (j->m < 4) {
        const int64_t end = j->col_end * NT < j->n ? j->col_end * NT : j->n;
        gemv_columns(j, j->col_begin * NT, end);
        return NULL;
    }
    float *wt = (float *)aligned_alloc(64, sizeof(float) * (size_t)((j->k * NT + 15) / 16 * 16));
    if (!wt) {
        j->failed = 1;
        return NULL;
    }
    for (int64_t tile = j->col_begin; tile < j->col_end; ++tile) {
        const int64_t n0 = tile * NT;
        const int nt = (int)((j->n - n0) < NT ? (j->n - n0) : NT);
        unpack_tile(j, n0, nt, wt);
        for (int64_t r = 0; r < j->m; r += 4) {
            const int rows = (int)((j->m - r) < 4 ? (j->m - r) : 4);
            micro_kernel(j->a + r * j->k, j->k, wt, j->k, rows, j->y + r * j->n + n0, j->n, nt,
                         j->bias ? j->bias + n0 : NULL);
        }
    }
    free(wt);
    return NULL;
}

static int get_buffer(PyObject *obj, Py_buffer *view, int writable, Py_ssize_t itemsize, const char *what) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) < 0) return -1;
    if (view->itemsize != itemsize) {
        PyErr_Format(PyExc_ValueError, "matmul_nbits: %s has item size %zd, expected %zd", what, view->itemsize,
                     itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static int need(const char *what, Py_ssize_t have, int64_t items, int64_t itemsize) {
    int64_t bytes;
    if (__builtin_mul_overflow(items, itemsize, &bytes) || have < bytes) {
        PyErr_Format(PyExc_ValueError, "matmul_nbits: %s holds %zd bytes, needs %lld items", what, have,
                     (long long)items);
        return -1;
    }
    return 0;
}

/* matmul_nbits(a, m, k, b, scales, zeros, bits, block, n, bias_or_None, y, threads) */
static PyObject *matmul_nbits(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *ao, *bo, *so, *zo, *biaso, *yo;
    long long m, k, n, block;
    int bits, threads;
    if (!PyArg_ParseTuple(args, "OLLOOOiLLOOi", &ao, &m, &k, &bo, &so, &zo, &bits, &block, &n, &biaso, &yo,
                          &threads))
        return NULL;
    if (bits != 4 && bits != 8) return PyErr_Format(PyExc_ValueError, "matmul_nbits: bits must be 4 or 8, got %d", bits);
    if (m < 0 || k < 1 || n < 1 || m >= ((int64_t)1 << 40) || k >= ((int64_t)1 << 31) || n >= ((int64_t)1 << 31))
        return PyErr_Format(PyExc_ValueError, "matmul_nbits: sizes M=%lld K=%lld N=%lld out of range", m, k, n);
    if (block < 16 || (block & (block - 1)) || block > (1 << 20))
        return PyErr_Format(PyExc_ValueError, "matmul_nbits: block_size must be a power of two >= 16, got %lld", block);
    const int64_t blocks = (k + block - 1) / block, blob = block * bits / 8;
    int64_t mk, mn, nb, nbb;
    if (__builtin_mul_overflow(m, k, &mk) || __builtin_mul_overflow(m, n, &mn) ||
        __builtin_mul_overflow(n, blocks, &nb) || __builtin_mul_overflow(nb, blob, &nbb))
        return PyErr_Format(PyExc_OverflowError, "matmul_nbits: sizes overflow");
    Py_buffer a = {0}, b = {0}, s = {0}, z = {0}, bias = {0}, y = {0};
    PyObject *result = NULL;
    int have_bias = biaso != Py_None;
    if (get_buffer(ao, &a, 0, 4, "A") < 0) goto done;
    if (get_buffer(bo, &b, 0, 1, "B") < 0) goto done;
    if (get_buffer(so, &s, 0, 4, "scales") < 0) goto done;
    if (get_buffer(zo, &z, 0, 4, "zero points") < 0) goto done;
    if (have_bias && get_buffer(biaso, &bias, 0, 4, "bias") < 0) goto done;
    if (get_buffer(yo, &y, 1, 4, "Y") < 0) goto done;
    if (need("A", a.len, mk, 4) < 0 || need("B", b.len, nbb, 1) < 0 || need("scales", s.len, nb, 4) < 0 ||
        need("zero points", z.len, nb, 4) < 0 || (have_bias && need("bias", bias.len, n, 4) < 0) ||
        need("Y", y.len, mn, 4) < 0)
        goto done;
    {
        const int64_t tiles = (n + NT - 1) / NT;
#ifdef HAVE_AVX2_DOT
        __builtin_cpu_init();
        const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
        const int avx2 = 0;
#endif
        int64_t t = threads < 1 ? 1 : (threads > MAX_THREADS ? MAX_THREADS : threads);
        if (t > tiles) t = tiles;
        woq_job jobs[MAX_THREADS];
        pthread_t tids[MAX_THREADS];
        int started[MAX_THREADS] = {0};
        for (int64_t i = 0; i < t; ++i) {
            jobs[i] = (woq_job){a.buf, b.buf, s.buf, z.buf, have_bias ? bias.buf : NULL, y.buf, m, k, n, blocks,
                                block, blob, bits, avx2, tiles * i / t, tiles * (i + 1) / t, 0};
        }
        int failed = 0;
        Py_BEGIN_ALLOW_THREADS;
        for (int64_t i = 1; i < t; ++i) started[i] = pthread_create(&tids[i], NULL, run_job, &jobs[i]) == 0;
        run_job(&jobs[0]);
        for (int64_t i = 1; i < t; ++i) {
            if (started[i])
                pthread_join(tids[i], NULL);
            else
                run_job(&jobs[i]);
        }
        for (int64_t i = 0; i < t; ++i) failed |= jobs[i].failed;
        Py_END_ALLOW_THREADS;
        if (failed) {
            PyErr_NoMemory();
            goto done;
        }
    }
    result = Py_None;
    Py_INCREF(result);
done:
    if (a.obj) PyBuffer_Release(&a);
    if (b.obj) PyBuffer_Release(&b);
    if (s.obj) PyBuffer_Release(&s);
    if (z.obj) PyBuffer_Release(&z);
    if (bias.obj) PyBuffer_Release(&bias);
    if (y.obj) PyBuffer_Release(&y);
    return result;
}

static PyMethodDef methods[] = {
    {"matmul_nbits", matmul_nbits, METH_VARARGS,
     "matmul_nbits(a, m, k, b, scales, zeros, bits, block, n, bias, y, threads): Y = A @ dequant(B)^T + bias"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "runtime._woq",
                                    "weight-only (4/8-bit, block-wise) GEMM for MatMulNBits", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__woq(void) { return PyModule_Create(&module); }
