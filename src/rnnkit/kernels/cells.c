/* rnnkit's compiled cell loops: built at first use by rnnkit/kernels/__init__.py, loaded with ctypes.
 *
 * The matrix products call the CBLAS gemm that NumPy links (passed in as a function pointer, with a flag
 * saying whether its integers are 64-bit), so no BLAS is linked here. The element-wise tanh calls are
 * vectorised through glibc's libmvec where the compiler knows it (RNNKIT_MVEC), plain libm otherwise.
 */
#include <math.h>
#include <stdint.h>

#define EXPORT __attribute__((visibility("default")))

#if defined(RNNKIT_MVEC)
/* glibc's <bits/math-vector.h> declares these only under -ffast-math, which we do not want. */
__attribute__((simd("notinbranch"))) float tanhf(float);
__attribute__((simd("notinbranch"))) double tanh(double);
#define VEC _Pragma("omp simd")
#else
#define VEC
#endif

enum { RowMajor = 101, NoTrans = 111, Trans = 112 };

typedef void (*sgemm64_t)(int, int, int, int64_t, int64_t, int64_t, float, const float *, int64_t,
                          const float *, int64_t, float, float *, int64_t);
typedef void (*sgemm32_t)(int, int, int, int32_t, int32_t, int32_t, float, const float *, int32_t,
                          const float *, int32_t, float, float *, int32_t);
typedef void (*dgemm64_t)(int, int, int, int64_t, int64_t, int64_t, double, const double *, int64_t,
                          const double *, int64_t, double, double *, int64_t);
typedef void (*dgemm32_t)(int, int, int, int32_t, int32_t, int32_t, double, const double *, int32_t,
                          const double *, int32_t, double, double *, int32_t);

/* C (M,Nc) = A (M,K) @ B (K,Nc) + beta C, all row-major. */
static inline void sgemm(void *fn, int ilp64, int unused, long M, long Nc, long K, const float *A,
                         long lda, const float *B, long ldb, float beta, float *C, long ldc) {
    (void)unused;
    if (ilp64)
        ((sgemm64_t)fn)(RowMajor, NoTrans, NoTrans, M, Nc, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
    else
        ((sgemm32_t)fn)(RowMajor, NoTrans, NoTrans, (int32_t)M, (int32_t)Nc, (int32_t)K, 1.0f, A,
                        (int32_t)lda, B, (int32_t)ldb, beta, C, (int32_t)ldc);
}

static inline void dgemm(void *fn, int ilp64, int unused, long M, long Nc, long K, const double *A,
                         long lda, const double *B, long ldb, double beta, double *C, long ldc) {
    (void)unused;
    if (ilp64)
        ((dgemm64_t)fn)(RowMajor, NoTrans, NoTrans, M, Nc, K, 1.0, A, lda, B, ldb, beta, C, ldc);
    else
        ((dgemm32_t)fn)(RowMajor, NoTrans, NoTrans, (int32_t)M, (int32_t)Nc, (int32_t)K, 1.0, A,
                        (int32_t)lda, B, (int32_t)ldb, beta, C, (int32_t)ldc);
}

EXPORT int rnnkit_kernels_version(void) { return 1; }

#define R float
#define SFX _f32
#define GEMM sgemm
#define TANH tanhf
#include "cells_impl.h"
#undef R
#undef SFX
#undef GEMM
#undef TANH

#define R double
#define SFX _f64
#define GEMM dgemm
#define TANH tanh
#include "cells_impl.h"
