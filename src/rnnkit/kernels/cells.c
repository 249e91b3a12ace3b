/* rnnkit's compiled cell loops: built at first use by rnnkit/kernels/__init__.py, loaded with ctypes.
 *
 * The matrix products call the CBLAS gemm that NumPy links (passed in as a function pointer, with a flag
 * saying whether its integers are 64-bit), so no BLAS is linked here. float32 tanh is a rational
 * function below; float64 tanh is libm's, vectorised through glibc's libmvec where available
 * (RNNKIT_MVEC).
 */
#include <math.h>
#include <stdint.h>

#define EXPORT __attribute__((visibility("default")))

#if defined(RNNKIT_MVEC)
/* glibc's <bits/math-vector.h> declares these only under -ffast-math, which we do not want. */
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

EXPORT int rnnkit_kernels_version(void) { return 3; }

/* float32 tanh as a rational function (the approximation Eigen and TensorFlow use): max relative error
 * 2.5e-7 (about 2 ulp) against tanh in double, measured; pure arithmetic, so the loops vectorise with any
 * compiler, ten times faster here than glibc's vector tanhf. Beyond |x| = 7.9053 tanh rounds to +-1. */
static inline float tanh_f32(float x) {
    const float lim = 7.90531110763549805f;
    const float xc = x > lim ? lim : (x < -lim ? -lim : x);
    const float x2 = xc * xc;
    float p = -2.76076847742355e-16f;
    p = p * x2 + 2.00018790482477e-13f;
    p = p * x2 + -8.60467152213735e-11f;
    p = p * x2 + 5.12229709037114e-08f;
    p = p * x2 + 1.48572235717979e-05f;
    p = p * x2 + 6.37261928875436e-04f;
    p = p * x2 + 4.89352455891786e-03f;
    p = p * xc;
    float q = 1.19825839466702e-06f;
    q = q * x2 + 1.18534705686654e-04f;
    q = q * x2 + 2.26843463243900e-03f;
    q = q * x2 + 4.89352518554385e-03f;
    return fabsf(x) < 0.0004f ? x : p / q;
}

#define R float
#define SFX _f32
#define GEMM sgemm
#define TANH tanh_f32
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
