/* runtime._kernels: integer kernels for the bundled int8 runtime.
 *
 * gemm_u8s8s32(A, B) -> C : C[m,n] = sum_k A[m,k] * B[k,n], A uint8 (M,K), B int8 (K,N),
 * C int32, the accumulation every quantized Conv/MatMul reduces to.  Portable C only
 * for now; buffers are validated before any pointer is touched.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static void gemm_portable(const uint8_t *a, const int8_t *b, int32_t *c, Py_ssize_t m, Py_ssize_t n,
                          Py_ssize_t k) {
    memset(c, 0, (size_t)(m * n) * sizeof(int32_t));
    for (Py_ssize_t i = 0; i < m; ++i)
        for (Py_ssize_t p = 0; p < k; ++p) {
            const int32_t av = a[i * k + p];
            const int8_t *brow = b + p * n;
            int32_t *crow = c + i * n;
            for (Py_ssize_t j = 0; j < n; ++j) crow[j] += av * (int32_t)brow[j];
        }
}

static PyObject *py_gemm_u8s8s32(PyObject *self, PyObject *args) {
    Py_buffer a, b, c;
    Py_ssize_t m, n, k;
    if (!PyArg_ParseTuple(args, "y*y*w*nnn", &a, &b, &c, &m, &n, &k)) return NULL;
    PyObject *ret = NULL;
    if (m < 0 || n < 0 || k < 0) {
        PyErr_SetString(PyExc_ValueError, "gemm_u8s8s32: negative dimension");
    } else if (a.len < m * k || b.len < k * n || c.len < (Py_ssize_t)sizeof(int32_t) * m * n) {
        PyErr_Format(PyExc_ValueError, "gemm_u8s8s32: buffers too small for M=%zd N=%zd K=%zd", m, n, k);
    } else {
        Py_BEGIN_ALLOW_THREADS
        gemm_portable((const uint8_t *)a.buf, (const int8_t *)b.buf, (int32_t *)c.buf, m, n, k);
        Py_END_ALLOW_THREADS
        ret = Py_NewRef(Py_None);
    }
    PyBuffer_Release(&a);
    PyBuffer_Release(&b);
    PyBuffer_Release(&c);
    return ret;
}

static PyMethodDef methods[] = {
    {"gemm_u8s8s32", py_gemm_u8s8s32, METH_VARARGS,
     "gemm_u8s8s32(a, b, c, m, n, k): c (int32, M*N) = a (uint8, M*K) @ b (int8, K*N)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels", "int8 kernels", -1, methods};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }
