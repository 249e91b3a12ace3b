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

#define GEMM_TYPES(T, name, I)                                                                        \
    typedef void (*name##gemm_t)(int, int, int, I, I, I, T, const T *, I, const T *, I, T, T *, I);    \
    typedef void (*name##gemv_t)(int, int, I, I, T, const T *, I, const T *, I, T, T *, I);
GEMM_TYPES(float, s64, int64_t)
GEMM_TYPES(float, s32, int32_t)
GEMM_TYPES(double, d64, int64_t)
GEMM_TYPES(double, d32, int32_t)

/* C (M,Nc) = A (M,K) @ B (K,Nc) + beta C, all row-major. `fns` holds {gemm, gemv}: with one row
 * (batch 1, sampling) the product is B^T a, a gemv, which reads B once instead of packing it. */
#define GEMM_FN(T, name, p)                                                                           \
    static inline void name(void *fns, int ilp64, int unused, long M, long Nc, long K, const T *A,     \
                            long lda, const T *B, long ldb, T beta, T *C, long ldc) {                 \
        void **f = (void **)fns;                                                                      \
        (void)unused;                                                                                 \
        if (M == 1) {                                                                                 \
            if (ilp64)                                                                                \
                ((p##64gemv_t)f[1])(RowMajor, Trans, K, Nc, (T)1, B, ldb, A, 1, beta, C, 1);          \
            else                                                                                      \
                ((p##32gemv_t)f[1])(RowMajor, Trans, (int32_t)K, (int32_t)Nc, (T)1, B, (int32_t)ldb,  \
                                    A, 1, beta, C, 1);                                                \
        } else if (ilp64) {                                                                           \
            ((p##64gemm_t)f[0])(RowMajor, NoTrans, NoTrans, M, Nc, K, (T)1, A, lda, B, ldb, beta, C,  \
                                ldc);                                                                 \
        } else {                                                                                      \
            ((p##32gemm_t)f[0])(RowMajor, NoTrans, NoTrans, (int32_t)M, (int32_t)Nc, (int32_t)K,      \
                                (T)1, A, (int32_t)lda, B, (int32_t)ldb, beta, C, (int32_t)ldc);       \
        }                                                                                             \
    }
GEMM_FN(float, sgemm, s)
GEMM_FN(double, dgemm, d)

EXPORT int rnnkit_kernels_version(void) { return 2; }

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
