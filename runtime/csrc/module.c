/* runtime._kernels: the Python face of the integer kernels.
 *
 * Every entry point checks each dimension and buffer length before a pointer is touched
 * (so no input reaches memory outside its buffers, whoever the caller), releases the GIL while
 * computing, and takes an explicit instruction-set path so tests can compare paths bit for bit.
 * Sizes are multiplied in 64 bits with overflow checks against the explicit limits below;
 * anything out of range raises ValueError or OverflowError (runtime/kernels.py turns both into
 * the runtime's InferenceError) instead of reaching a kernel.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conv.h"
#include "dispatch.h"
#include "maxpool.h"
#include "qadd.h"
#include "qgemm.h"
#include "threadpool.h"

/* Limits: every dimension below 2^31; a GEMM depth (and a depthwise window) small enough that
 * no int32 accumulator can overflow (QGEMM_K_MAX); packed weights at most 8 GiB. */
#define DIM_MAX ((int64_t)1 << 31)
#define TAPS_MAX QGEMM_K_MAX
#define PACK_BYTES_MAX ((int64_t)1 << 33)
#define THREADS_MAX POOL_MAX_THREADS

static const char *const path_names[PATH_COUNT] = {"portable", "avx2", "avx512vnni", "amx"};

/* ---- PackedWeights ---------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD packed_b b;
} PackedWeights;

static void packed_dealloc(PackedWeights *self) {
    free(self->b.data);
    free(self->b.data16);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *packed_get_k(PackedWeights *self, void *closure) {
    (void)closure;
    return PyLong_FromLongLong(self->b.k);
}

static PyObject *packed_get_n(PackedWeights *self, void *closure) {
    (void)closure;
    return PyLong_FromLongLong(self->b.n);
}

static PyGetSetDef packed_getset[] = {
    {"k", (getter)packed_get_k, NULL, "depth (input features) of the packed matrix", NULL},
    {"n", (getter)packed_get_n, NULL, "output columns of the packed matrix", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject PackedWeightsType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "runtime._kernels.PackedWeights",
    .tp_basicsize = sizeof(PackedWeights),
    .tp_dealloc = (destructor)packed_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "int8 weights packed once for the GEMM kernels (16-column VNNI/AMX blocks)",
    .tp_getset = packed_getset,
};

/* ---- DepthwiseWeights -------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD dw_weights d;
    int64_t kh, kw;
} DepthwiseWeights;

static void dwweights_dealloc(DepthwiseWeights *self) {
    dw_weights_free(&self->d);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *dwweights_get_shape(DepthwiseWeights *self, void *closure) {
    (void)closure;
    return Py_BuildValue("(LLL)", (long long)self->kh, (long long)self->kw, (long long)self->d.c);
}

static PyGetSetDef dwweights_getset[] = {
    {"shape", (getter)dwweights_get_shape, NULL, "(kh, kw, channels) of the weights", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject DepthwiseWeightsType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "runtime._kernels.DepthwiseWeights",
    .tp_basicsize = sizeof(DepthwiseWeights),
    .tp_dealloc = (destructor)dwweights_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "int8 depthwise weights prepared once: channel sums and the SIMD paths' tap-pair layouts",
    .tp_getset = dwweights_getset,
};

/* ---- argument checks -------------------------------------------------------------- */

static int check_dims(const char *fn, int n, const int64_t *v, const char *const *names, int64_t minimum) {
    for (int i = 0; i < n; ++i)
        if (v[i] < minimum || v[i] >= DIM_MAX) {
            PyErr_Format(PyExc_ValueError, "%s: %s=%lld is out of range [%lld, 2^31)", fn, names[i],
                         (long long)v[i], (long long)minimum);
            return -1;
        }
    return 0;
}

/* *out = the product of n factors (each >= 0), or -1 with OverflowError naming what. */
static int checked_product(const char *fn, const char *what, int n, const int64_t *f, int64_t *out) {
    int64_t p = 1;
    for (int i = 0; i < n; ++i)
        if (__builtin_mul_overflow(p, f[i], &p)) {
            PyErr_Format(PyExc_OverflowError, "%s: %s overflows 64-bit arithmetic", fn, what);
            return -1;
        }
    *out = p;
    return 0;
}

/* Threads: at least 1; more than THREADS_MAX or 4 per online CPU is clamped with a warning
 * (a worker per requested thread would otherwise be created). */
static int clamp_threads(const char *fn, int *threads) {
    if (*threads < 1) {
        PyErr_Format(PyExc_ValueError, "%s: threads=%d must be >= 1", fn, *threads);
        return -1;
    }
    const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int most = cpus > 0 && cpus < THREADS_MAX / 4 ? (int)(4 * cpus) : THREADS_MAX;
    if (*threads > most) {
        if (PyErr_WarnFormat(PyExc_RuntimeWarning, 1, "%s: threads=%d clamped to %d (4 per CPU, at most %d)", fn,
                             *threads, most, THREADS_MAX) < 0)
            return -1;
        *threads = most;
    }
    return 0;
}

/* Bytes needed for rows x cols elements of elem bytes with row stride ld (elements). */
static int strided_bytes(int64_t rows, int64_t cols, int64_t ld, int64_t elem, int64_t *out) {
    if (rows == 0 || cols == 0) {
        *out = 0;
        return 0;
    }
    int64_t t;
    if (__builtin_mul_overflow(rows - 1, ld, &t) || __builtin_add_overflow(t, cols, &t) ||
        __builtin_mul_overflow(t, elem, &t))
        return -1;
    *out = t;
    return 0;
}

static int need(const char *fn, const char *what, const Py_buffer *buf, int64_t rows, int64_t cols, int64_t ld,
                int64_t elem) {
    int64_t bytes;
    if (strided_bytes(rows, cols, ld, elem, &bytes) < 0) {
        PyErr_Format(PyExc_ValueError, "%s: %s size overflows", fn, what);
        return -1;
    }
    if ((int64_t)buf->len < bytes) {
        PyErr_Format(PyExc_ValueError, "%s: %s holds %zd bytes, %lld needed", fn, what, buf->len,
                     (long long)bytes);
        return -1;
    }
    return 0;
}

static int check_path(const char *fn, int path) {
    if (path < 0 || path >= PATH_COUNT || !path_supported(path)) {
        PyErr_Format(PyExc_ValueError, "%s: instruction-set path %d is not available on this machine", fn, path);
        return -1;
    }
    return 0;
}

/* Fills os from Python arguments after checking bias/mult/out sizes and the clamp range. */
static int make_out_stage(const char *fn, Py_buffer *bias, Py_buffer *mult, int have_mult, int zy, int lo, int hi,
                          Py_buffer *out, int64_t rows, int64_t n, int64_t ldo, out_stage *os) {
    if (ldo < n) {
        PyErr_Format(PyExc_ValueError, "%s: output stride %lld < %lld columns", fn, (long long)ldo, (long long)n);
        return -1;
    }
    if (need(fn, "bias", bias, 1, n, n, 4) < 0) return -1;
    if (have_mult) {
        if (need(fn, "multiplier", mult, 1, n, n, 4) < 0) return -1;
        const float *m = mult->buf;
        for (int64_t j = 0; j < n; ++j)
            if (!isfinite(m[j])) {
                PyErr_Format(PyExc_ValueError, "%s: multiplier[%lld] is not finite", fn, (long long)j);
                return -1;
            }
        if (lo < -128 || hi > 255 || lo > hi || zy < -128 || zy > 255) {
            PyErr_Format(PyExc_ValueError, "%s: clamp [%d, %d] / zero point %d outside the 8-bit range", fn, lo, hi,
                         zy);
            return -1;
        }
    }
    if (need(fn, "output", out, rows, n, ldo, have_mult ? 1 : 4) < 0) return -1;
    os->bias = bias->buf;
    os->mult = have_mult ? mult->buf : NULL;
    os->zy = zy;
    os->lo = lo;
    os->hi = hi;
    os->flo = (float)(lo - zy);
    os->fhi = (float)(hi - zy);
    os->out = out->buf;
    os->ldo = ldo;
    return 0;
}

/* Output height/width; -1 with an exception when the window does not fit. */
static int conv_geometry(const char *fn, conv_geom *g, int64_t pb, int64_t pr) {
    const int64_t eh = g->h + g->pt + pb - g->dh * (g->kh - 1) - 1;
    const int64_t ew = g->w + g->pl + pr - g->dw * (g->kw - 1) - 1;
    if (eh < 0 || ew < 0) {
        PyErr_Format(PyExc_ValueError, "%s: kernel %lldx%lld (dilation %lld,%lld) larger than padded input %lldx%lld",
                     fn, (long long)g->kh, (long long)g->kw, (long long)g->dh, (long long)g->dw,
                     (long long)(g->h + g->pt + pb), (long long)(g->w + g->pl + pr));
        return -1;
    }
    g->oh = eh / g->sh + 1;
    g->ow = ew / g->sw + 1;
    return 0;
}

/* ---- entry points ----------------------------------------------------------------- */

static PyObject *py_pack_weights(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer w;
    int64_t n, k;
    if (!PyArg_ParseTuple(args, "y*LL", &w, &n, &k)) return NULL;
    PackedWeights *obj = NULL;
    const char *names[] = {"n", "k"};
    const int64_t dims[] = {n, k};
    if (check_dims("pack_weights", 2, dims, names, 1) < 0 || need("pack_weights", "weights", &w, n, k, k, 1) < 0)
        goto done;
    if (k > QGEMM_K_MAX) {
        PyErr_Format(PyExc_ValueError, "pack_weights: depth k=%lld exceeds %d (int32 accumulators could overflow)",
                     (long long)k, QGEMM_K_MAX);
        goto done;
    }
    const int64_t kp = (k + QGEMM_KALIGN - 1) / QGEMM_KALIGN * QGEMM_KALIGN;
    const int64_t np = (n + QGEMM_NBLOCK - 1) / QGEMM_NBLOCK * QGEMM_NBLOCK;
    const int64_t packed_dims[] = {kp, np};
    int64_t bytes;
    if (checked_product("pack_weights", "packed size", 2, packed_dims, &bytes) < 0) goto done;
    if (bytes > PACK_BYTES_MAX) {
        PyErr_Format(PyExc_ValueError, "pack_weights: %lld x %lld weights need %lld packed bytes, more than the %lld limit",
                     (long long)n, (long long)k, (long long)bytes, (long long)PACK_BYTES_MAX);
        goto done;
    }
    obj = PyObject_New(PackedWeights, &PackedWeightsType);
    if (obj == NULL) goto done;
    obj->b.k = k;
    obj->b.n = n;
    obj->b.kp = kp;
    obj->b.np = np;
    obj->b.data16 = NULL;
    obj->b.data = aligned_alloc(64, (size_t)bytes);
    if (obj->b.data == NULL) {
        Py_DECREF(obj);
        obj = NULL;
        PyErr_NoMemory();
        goto done;
    }
    const int8_t *src = w.buf;
    int8_t *dst = obj->b.data;
    for (int64_t col = 0; col < obj->b.np; ++col) {
        int8_t *blk = dst + (col / QGEMM_NBLOCK) * kp * QGEMM_NBLOCK + (col % QGEMM_NBLOCK) * 4;
        for (int64_t kk = 0; kk < kp; ++kk)
            blk[(kk / 4) * QGEMM_NBLOCK * 4 + kk % 4] = (col < n && kk < k) ? src[col * k + kk] : 0;
    }
done:
    PyBuffer_Release(&w);
    return (PyObject *)obj;
}

static PyObject *py_pack_depthwise(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer w;
    int64_t kh, kw, c;
    if (!PyArg_ParseTuple(args, "y*LLL", &w, &kh, &kw, &c)) return NULL;
    DepthwiseWeights *obj = NULL;
    const char *names[] = {"kh", "kw", "c"};
    const int64_t dims[] = {kh, kw, c};
    if (check_dims("pack_depthwise", 3, dims, names, 1) < 0) goto done;
    if (kh * kw > TAPS_MAX) { /* both < 2^31: the product fits 64 bits */
        PyErr_Format(PyExc_ValueError, "pack_depthwise: %lldx%lld window exceeds %d taps (int32 accumulators could overflow)",
                     (long long)kh, (long long)kw, TAPS_MAX);
        goto done;
    }
    if (need("pack_depthwise", "weights", &w, kh * kw, c, c, 1) < 0) goto done;
    obj = PyObject_New(DepthwiseWeights, &DepthwiseWeightsType);
    if (obj == NULL) goto done;
    obj->kh = kh;
    obj->kw = kw;
    if (dw_weights_init(&obj->d, w.buf, kh, kw, c) < 0) {
        Py_DECREF(obj);
        obj = NULL;
        PyErr_NoMemory();
    }
done:
    PyBuffer_Release(&w);
    return (PyObject *)obj;
}

static PyObject *py_qgemm(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer a, bias, mult = {0}, out;
    PyObject *packed_obj, *mult_obj;
    int64_t m, lda, ldo;
    int zy, lo, hi, threads, path;
    if (!PyArg_ParseTuple(args, "y*LLO!y*OiiiLw*ii", &a, &m, &lda, &PackedWeightsType, &packed_obj, &bias, &mult_obj,
                          &zy, &lo, &hi, &ldo, &out, &threads, &path))
        return NULL;
    PyObject *ret = NULL;
    const int have_mult = mult_obj != Py_None;
    if (have_mult && PyObject_GetBuffer(mult_obj, &mult, PyBUF_SIMPLE) < 0) goto release;
    const packed_b *b = &((PackedWeights *)packed_obj)->b;
    const char *names[] = {"m", "lda", "ldo"};
    const int64_t dims[] = {m, lda, ldo};
    out_stage os;
    if (check_dims("qgemm", 3, dims, names, 0) < 0 || check_path("qgemm", path) < 0 ||
        clamp_threads("qgemm", &threads) < 0)
        goto release;
    if (lda < b->k) {
        PyErr_Format(PyExc_ValueError, "qgemm: lda=%lld < k=%lld", (long long)lda, (long long)b->k);
        goto release;
    }
    if (need("qgemm", "a", &a, m, b->k, lda, 1) < 0 ||
        make_out_stage("qgemm", &bias, &mult, have_mult, zy, lo, hi, &out, m, b->n, ldo, &os) < 0)
        goto release;
    if (qgemm_prepare(path, &((PackedWeights *)packed_obj)->b) < 0) {
        PyErr_NoMemory();
        goto release;
    }
    dense_ctx ctx = {a.buf, lda, b->k};
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = qgemm_run(path, b, m, fill_dense, &ctx, &os, threads);
    Py_END_ALLOW_THREADS if (rc < 0) PyErr_NoMemory();
    else ret = Py_NewRef(Py_None);
release:
    PyBuffer_Release(&a);
    PyBuffer_Release(&bias);
    if (have_mult && mult.obj) PyBuffer_Release(&mult);
    PyBuffer_Release(&out);
    return ret;
}

/* Shared parsing of the convolution entry points. */
typedef struct {
    Py_buffer x, bias, mult, out;
    int have_mult;
    conv_geom g;
    int64_t m, taps; /* output pixels (GEMM rows) and window taps, overflow-checked */
    int zx, zy, lo, hi, threads, path;
} conv_call;

/* weights_obj: checked against wtype, or any object when wtype is NULL (the caller checks it). */
static int parse_conv(const char *fn, PyObject *args, conv_call *cc, PyObject **weights_obj, PyTypeObject *wtype) {
    PyObject *mult_obj;
    int64_t pb, pr;
    conv_geom *g = &cc->g;
    memset(cc, 0, sizeof *cc);
    int ok;
    if (wtype)
        ok = PyArg_ParseTuple(args, "y*LLLLO!LLLLLLLLLLiy*Oiiiw*ii", &cc->x, &g->batch, &g->h, &g->w, &g->c, wtype,
                              weights_obj, &g->kh, &g->kw, &g->sh, &g->sw, &g->dh, &g->dw, &g->pt, &g->pl, &pb, &pr,
                              &cc->zx, &cc->bias, &mult_obj, &cc->zy, &cc->lo, &cc->hi, &cc->out, &cc->threads,
                              &cc->path);
    else
        ok = PyArg_ParseTuple(args, "y*LLLLOLLLLLLLLLLiy*Oiiiw*ii", &cc->x, &g->batch, &g->h, &g->w, &g->c,
                              weights_obj, &g->kh, &g->kw, &g->sh, &g->sw, &g->dh, &g->dw, &g->pt, &g->pl, &pb, &pr,
                              &cc->zx, &cc->bias, &mult_obj, &cc->zy, &cc->lo, &cc->hi, &cc->out, &cc->threads,
                              &cc->path);
    if (!ok) return -1;
    cc->have_mult = mult_obj != Py_None;
    if (cc->have_mult && PyObject_GetBuffer(mult_obj, &cc->mult, PyBUF_SIMPLE) < 0) {
        cc->have_mult = 0;
        return -2;
    }
    const char *names[] = {"batch", "h", "w", "c", "kh", "kw", "sh", "sw", "dh", "dw"};
    const int64_t dims[] = {g->batch, g->h, g->w, g->c, g->kh, g->kw, g->sh, g->sw, g->dh, g->dw};
    const char *pnames[] = {"pad_top", "pad_left", "pad_bottom", "pad_right"};
    const int64_t pads[] = {g->pt, g->pl, pb, pr};
    if (check_dims(fn, 10, dims, names, 1) < 0 || check_dims(fn, 4, pads, pnames, 0) < 0 ||
        check_path(fn, cc->path) < 0 || clamp_threads(fn, &cc->threads) < 0)
        return -2;
    if (cc->zx < 0 || cc->zx > 255) {
        PyErr_Format(PyExc_ValueError, "%s: input zero point %d is not a uint8", fn, cc->zx);
        return -2;
    }
    const int64_t in_px[] = {g->batch, g->h, g->w}, taps[] = {g->kh, g->kw};
    int64_t in_rows;
    if (conv_geometry(fn, g, pb, pr) < 0 || checked_product(fn, "batch x h x w", 3, in_px, &in_rows) < 0 ||
        need(fn, "x", &cc->x, in_rows, g->c, g->c, 1) < 0)
        return -2;
    const int64_t out_dims[] = {g->batch, g->oh, g->ow};
    if (checked_product(fn, "batch x output h x output w", 3, out_dims, &cc->m) < 0 ||
        checked_product(fn, "kh x kw", 2, taps, &cc->taps) < 0)
        return -2;
    return 0;
}

static void release_conv(conv_call *cc) {
    PyBuffer_Release(&cc->x);
    PyBuffer_Release(&cc->bias);
    if (cc->have_mult) PyBuffer_Release(&cc->mult);
    PyBuffer_Release(&cc->out);
}

static PyObject *py_qconv(PyObject *self, PyObject *args) {
    (void)self;
    conv_call cc;
    PyObject *packed_obj = NULL;
    const int rc = parse_conv("qconv", args, &cc, &packed_obj, &PackedWeightsType);
    if (rc == -1) return NULL;
    PyObject *ret = NULL;
    if (rc < 0) goto release;
    const packed_b *b = &((PackedWeights *)packed_obj)->b;
    const conv_geom *g = &cc.g;
    int64_t window;
    if (__builtin_mul_overflow(cc.taps, g->c, &window) || b->k != window) {
        PyErr_Format(PyExc_ValueError, "qconv: packed weights have k=%lld, the %lldx%lldx%lld window differs",
                     (long long)b->k, (long long)g->kh, (long long)g->kw, (long long)g->c);
        goto release;
    }
    const int64_t m = cc.m;
    out_stage os;
    if (make_out_stage("qconv", &cc.bias, &cc.mult, cc.have_mult, cc.zy, cc.lo, cc.hi, &cc.out, m, b->n, b->n, &os) < 0)
        goto release;
    if (qgemm_prepare(cc.path, &((PackedWeights *)packed_obj)->b) < 0) {
        PyErr_NoMemory();
        goto release;
    }
    int err;
    const int direct = g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->pt == 0 && g->pl == 0 &&
                       g->oh == g->h && g->ow == g->w;
    if (direct) {
        /* A 1x1 stride-1 unpadded convolution reads NHWC rows as they are. */
        dense_ctx ctx = {cc.x.buf, g->c, g->c};
        Py_BEGIN_ALLOW_THREADS err = qgemm_run(cc.path, b, m, fill_dense, &ctx, &os, cc.threads);
        Py_END_ALLOW_THREADS
    } else {
        im2col_ctx ctx = {cc.x.buf, *g, (uint8_t)cc.zx};
        Py_BEGIN_ALLOW_THREADS err = qgemm_run(cc.path, b, m, fill_im2col, &ctx, &os, cc.threads);
        Py_END_ALLOW_THREADS
    }
    if (err < 0)
        PyErr_NoMemory();
    else
        ret = Py_NewRef(Py_None);
release:
    release_conv(&cc);
    return ret;
}

/* Weights: a DepthwiseWeights (prepared once, the runtime's form) or an int8 (kh*kw, c) buffer
 * prepared for this call only. */
static PyObject *py_qdepthwise(PyObject *self, PyObject *args) {
    (void)self;
    conv_call cc;
    Py_buffer w = {0};
    PyObject *wobj = NULL;
    const int rc = parse_conv("qdepthwise", args, &cc, &wobj, NULL);
    if (rc == -1) return NULL;
    PyObject *ret = NULL;
    dw_weights local = {0};
    dw_weights *d = &local;
    if (rc < 0) goto release;
    const conv_geom *g = &cc.g;
    out_stage os;
    if (cc.taps > TAPS_MAX) {
        PyErr_Format(PyExc_ValueError, "qdepthwise: %lldx%lld window exceeds %d taps (int32 accumulators could overflow)",
                     (long long)g->kh, (long long)g->kw, TAPS_MAX);
        goto release;
    }
    if (Py_IS_TYPE(wobj, &DepthwiseWeightsType)) {
        DepthwiseWeights *dw = (DepthwiseWeights *)wobj;
        if (dw->kh != g->kh || dw->kw != g->kw || dw->d.c != g->c) {
            PyErr_Format(PyExc_ValueError, "qdepthwise: weights are %lldx%lldx%lld, the %lldx%lldx%lld window differs",
                         (long long)dw->kh, (long long)dw->kw, (long long)dw->d.c, (long long)g->kh,
                         (long long)g->kw, (long long)g->c);
            goto release;
        }
        d = &dw->d;
    } else if (PyObject_GetBuffer(wobj, &w, PyBUF_SIMPLE) < 0 ||
               need("qdepthwise", "weights", &w, cc.taps, g->c, g->c, 1) < 0) {
        goto release;
    }
    if (make_out_stage("qdepthwise", &cc.bias, &cc.mult, cc.have_mult, cc.zy, cc.lo, cc.hi, &cc.out, cc.m, g->c, g->c,
                       &os) < 0)
        goto release;
    if ((d == &local && dw_weights_init(&local, w.buf, g->kh, g->kw, g->c) < 0) || dw_weights_prepare(cc.path, d) < 0) {
        PyErr_NoMemory();
        goto release;
    }
    depthwise_args da = {cc.x.buf, d->w, *g, cc.zx, os};
    int err;
    Py_BEGIN_ALLOW_THREADS err = depthwise_run(cc.path, &da, d, cc.threads);
    Py_END_ALLOW_THREADS if (err < 0) PyErr_NoMemory();
    else ret = Py_NewRef(Py_None);
release:
    dw_weights_free(&local);
    release_conv(&cc);
    if (w.obj) PyBuffer_Release(&w);
    return ret;
}

static PyObject *py_qadd(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer a, b, y;
    int64_t n;
    qadd_params p;
    int path;
    if (!PyArg_ParseTuple(args, "y*y*w*Lfffiiii", &a, &b, &y, &n, &p.ratio_a, &p.ratio_b, &p.offset, &p.lo, &p.hi,
                          &p.is_signed, &path))
        return NULL;
    PyObject *ret = NULL;
    const int64_t a_step = (int64_t)a.len == 1 ? 0 : 1, b_step = (int64_t)b.len == 1 ? 0 : 1;
    const int lo_min = p.is_signed ? -128 : 0, hi_max = p.is_signed ? 127 : 255;
    if (n < 0 || (int64_t)y.len < n || (a_step && (int64_t)a.len < n) || (b_step && (int64_t)b.len < n) ||
        (n > 0 && (a.len < 1 || b.len < 1))) {
        PyErr_Format(PyExc_ValueError, "qadd: buffers (%zd, %zd, %zd bytes) do not hold %lld elements", a.len, b.len,
                     y.len, (long long)n);
    } else if (check_path("qadd", path) < 0) {
    } else if (!isfinite(p.ratio_a) || !isfinite(p.ratio_b) || !isfinite(p.offset) || p.lo < lo_min || p.hi > hi_max ||
               p.lo > p.hi) {
        PyErr_SetString(PyExc_ValueError, "qadd: non-finite scale ratio or clamp outside the 8-bit range");
    } else {
#if defined(COMPRESS_X86)
        const qadd_fn run = path == PATH_PORTABLE ? qadd_portable : qadd_fma;
#else
        const qadd_fn run = qadd_portable;
#endif
        Py_BEGIN_ALLOW_THREADS run(a.buf, a_step, b.buf, b_step, y.buf, n, &p);
        Py_END_ALLOW_THREADS ret = Py_NewRef(Py_None);
    }
    PyBuffer_Release(&a);
    PyBuffer_Release(&b);
    PyBuffer_Release(&y);
    return ret;
}

static PyObject *py_quantize_f32(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer x, y;
    int64_t n;
    float scale;
    int zp, lo, hi, is_signed, path;
    if (!PyArg_ParseTuple(args, "y*w*Lfiiiii", &x, &y, &n, &scale, &zp, &lo, &hi, &is_signed, &path)) return NULL;
    PyObject *ret = NULL;
    const int lo_min = is_signed ? -128 : 0, hi_max = is_signed ? 127 : 255;
    if (n < 0 || (int64_t)y.len < n || (int64_t)(x.len / (Py_ssize_t)sizeof(float)) < n) {
        PyErr_Format(PyExc_ValueError, "quantize_f32: buffers (%zd, %zd bytes) do not hold %lld elements", x.len, y.len,
                     (long long)n);
    } else if (check_path("quantize_f32", path) < 0) {
    } else if (lo < lo_min || hi > hi_max || lo > hi || zp < lo || zp > hi) {
        /* Any scale is fine: x / scale is IEEE in both builds, as in numpy (0 and inf included). */
        PyErr_SetString(PyExc_ValueError, "quantize_f32: zero point or bounds outside the 8-bit range");
    } else {
#if defined(COMPRESS_X86)
        const quantize_fn run = path == PATH_PORTABLE ? quantize_f32_portable : quantize_f32_fma;
#else
        const quantize_fn run = quantize_f32_portable;
#endif
        Py_BEGIN_ALLOW_THREADS run(x.buf, y.buf, n, scale, zp, lo, hi, is_signed);
        Py_END_ALLOW_THREADS ret = Py_NewRef(Py_None);
    }
    PyBuffer_Release(&x);
    PyBuffer_Release(&y);
    return ret;
}

static PyObject *py_maxpool(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer x, out;
    conv_geom g;
    int64_t pb, pr;
    int is_signed, threads;
    if (!PyArg_ParseTuple(args, "y*LLLLLLLLLLLLLLw*ii", &x, &g.batch, &g.h, &g.w, &g.c, &g.kh, &g.kw, &g.sh, &g.sw,
                          &g.dh, &g.dw, &g.pt, &g.pl, &pb, &pr, &out, &is_signed, &threads))
        return NULL;
    PyObject *ret = NULL;
    const char *names[] = {"batch", "h", "w", "c", "kh", "kw", "sh", "sw", "dh", "dw"};
    const int64_t dims[] = {g.batch, g.h, g.w, g.c, g.kh, g.kw, g.sh, g.sw, g.dh, g.dw};
    const char *pnames[] = {"pad_top", "pad_left", "pad_bottom", "pad_right"};
    const int64_t pads[] = {g.pt, g.pl, pb, pr};
    int64_t in_rows, out_rows;
    if (check_dims("maxpool", 10, dims, names, 1) < 0 || check_dims("maxpool", 4, pads, pnames, 0) < 0 ||
        clamp_threads("maxpool", &threads) < 0 || conv_geometry("maxpool", &g, pb, pr) < 0)
        goto release;
    const int64_t in_px[] = {g.batch, g.h, g.w}, out_px[] = {g.batch, g.oh, g.ow};
    if (checked_product("maxpool", "batch x h x w", 3, in_px, &in_rows) < 0 ||
        checked_product("maxpool", "batch x output h x output w", 3, out_px, &out_rows) < 0 ||
        need("maxpool", "x", &x, in_rows, g.c, g.c, 1) < 0 || need("maxpool", "output", &out, out_rows, g.c, g.c, 1) < 0)
        goto release;
    if (g.pt >= g.kh * g.dh || g.pl >= g.kw * g.dw || pb >= g.kh * g.dh || pr >= g.kw * g.dw) {
        PyErr_SetString(PyExc_ValueError, "maxpool: a pad reaches past a whole window (windows of padding only)");
        goto release;
    }
    maxpool_args a = {x.buf, out.buf, g, is_signed, 0};
    Py_BEGIN_ALLOW_THREADS maxpool_run(&a, threads);
    Py_END_ALLOW_THREADS ret = Py_NewRef(Py_None);
release:
    PyBuffer_Release(&x);
    PyBuffer_Release(&out);
    return ret;
}

static PyObject *py_peak(PyObject *self, PyObject *args) {
    (void)self;
    int path;
    long long iterations;
    if (!PyArg_ParseTuple(args, "iL", &path, &iterations)) return NULL;
    if (check_path("peak", path) < 0) return NULL;
    const qgemm_isa *isa = qgemm_isa_of(path);
    if (isa->peak == NULL) {
        PyErr_Format(PyExc_ValueError, "peak: path %s has no peak loop", path_names[path]);
        return NULL;
    }
    if (iterations < 1 || iterations > ((long long)1 << 40)) {
        PyErr_Format(PyExc_ValueError, "peak: iterations=%lld outside [1, 2^40]", iterations);
        return NULL;
    }
    int64_t ops;
    Py_BEGIN_ALLOW_THREADS ops = isa->peak(iterations);
    Py_END_ALLOW_THREADS return PyLong_FromLongLong(ops);
}

static PyObject *py_min_work_per_thread(PyObject *self, PyObject *args) {
    (void)self;
    long long v[POOL_WORK_KINDS] = {-1, -1, -1};
    if (!PyArg_ParseTuple(args, "|LLL", &v[0], &v[1], &v[2])) return NULL;
    PyObject *old = Py_BuildValue("(LLL)", (long long)pool_min_work[0], (long long)pool_min_work[1],
                                  (long long)pool_min_work[2]);
    if (old == NULL) return NULL;
    for (int i = 0; i < POOL_WORK_KINDS; ++i)
        if (v[i] == 0 || v[i] < -1) {
            Py_DECREF(old);
            PyErr_Format(PyExc_ValueError, "min_work_per_thread: minimum %lld must be >= 1 (-1 keeps it)", v[i]);
            return NULL;
        }
    /* Read by kernels without the GIL: set only between calls (the tests, a tuning script). */
    for (int i = 0; i < POOL_WORK_KINDS; ++i)
        if (v[i] > 0) pool_min_work[i] = v[i];
    return old;
}

static PyObject *py_paths(PyObject *self, PyObject *noargs) {
    (void)self;
    (void)noargs;
    PyObject *list = PyList_New(0);
    for (int p = 0; list && p < PATH_COUNT; ++p) {
        if (!path_supported(p)) continue;
        PyObject *name = PyUnicode_FromString(path_names[p]);
        if (name == NULL || PyList_Append(list, name) < 0) Py_CLEAR(list);
        Py_XDECREF(name);
    }
    return list;
}

static PyMethodDef methods[] = {
    {"pack_weights", py_pack_weights, METH_VARARGS,
     "pack_weights(w, n, k) -> PackedWeights: w is int8 (n, k) row-major (one row per output column)"},
    {"qgemm", py_qgemm, METH_VARARGS,
     "qgemm(a, m, lda, packed, bias, mult, zy, lo, hi, ldo, out, threads, path): out = stage(a @ packed^T + bias);"
     " mult None gives int32 output, otherwise requantized bytes"},
    {"qconv", py_qconv, METH_VARARGS,
     "qconv(x, batch, h, w, c, packed, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr, zx, bias, mult, zy, lo, hi, out, threads,"
     " path): NHWC uint8 convolution through im2col + GEMM"},
    {"pack_depthwise", py_pack_depthwise, METH_VARARGS,
     "pack_depthwise(w, kh, kw, c) -> DepthwiseWeights: w is int8 (kh*kw, c), prepared once for every path"},
    {"qdepthwise", py_qdepthwise, METH_VARARGS,
     "qdepthwise(x, batch, h, w, c, weights, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr, zx, bias, mult, zy, lo, hi, out,"
     " threads, path): NHWC uint8 depthwise convolution, weights a DepthwiseWeights or (kh*kw, c) int8"},
    {"quantize_f32", py_quantize_f32, METH_VARARGS,
     "quantize_f32(x, y, n, scale, zp, lo, hi, is_signed, path): QuantizeLinear of float32 x with one scale into"
     " uint8/int8 y (the numpy arithmetic: fp32 x / scale, round half to even, + zp, saturate; NaN -> 0)"},
    {"qadd", py_qadd, METH_VARARGS,
     "qadd(a, b, y, n, ratio_a, ratio_b, offset, lo, hi, is_signed, path): quantized add;"
     " a or b of one byte broadcasts"},
    {"maxpool", py_maxpool, METH_VARARGS,
     "maxpool(x, batch, h, w, c, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr, out, is_signed, threads): NHWC 8-bit"
     " max pooling"},
    {"peak", py_peak, METH_VARARGS,
     "peak(path, iterations) -> int8 operations executed by a register-only loop of the path's multiply-accumulate"
     " instructions in its micro-kernel's mix (time it to get the path's measured peak)"},
    {"min_work_per_thread", py_min_work_per_thread, METH_VARARGS,
     "min_work_per_thread([gemm, depthwise, maxpool]) -> previous (gemm, depthwise, maxpool): a call splits across"
     " threads only when each gets this much work (GEMM MACs, depthwise window MACs, maxpool comparisons); -1 keeps"
     " one"},
    {"paths", py_paths, METH_NOARGS, "paths() -> instruction-set paths available here, slowest first"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels", "int8 kernels of the bundled runtime", -1,
                                    methods};

PyMODINIT_FUNC PyInit__kernels(void) {
    if (PyType_Ready(&PackedWeightsType) < 0 || PyType_Ready(&DepthwiseWeightsType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "PackedWeights", (PyObject *)&PackedWeightsType) < 0 ||
        PyModule_AddObjectRef(m, "DepthwiseWeights", (PyObject *)&DepthwiseWeightsType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    for (int p = 0; p < PATH_COUNT; ++p)
        if (PyModule_AddIntConstant(m, path_names[p], p) < 0) {
            Py_DECREF(m);
            return NULL;
        }
    return m;
}
