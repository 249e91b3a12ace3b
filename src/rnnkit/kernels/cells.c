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
GEMM_FN(float, sgemm_blas, s)
GEMM_FN(double, dgemm, d)

/* The per-step product of a small batch, float32: C (M,Nc) = A (M,K) @ B (K,Nc) + beta C, with B (Wh)
 * read in place, 32 columns at a time (a strip that stays in L1 while every row tile of A passes over it)
 * and 8 x 32 accumulators held in vector registers. BLAS packs the whole of B at every call, which for a
 * batch of 32 costs about as much as the product; here nothing is packed. GCC vector extensions: AVX-512
 * with -march=native, split into narrower vectors elsewhere. Edges fall back to plain loops. */
typedef float v16f __attribute__((vector_size(64), aligned(4)));

#define SG_KC 128 /* K chunk: a 128 x 32 strip of B is 16 KB, resident in L1 while A's row tiles pass */

static void sgemm_small(long M, long Nc, long K, const float *A, long lda, const float *B, long ldb,
                        float beta, float *C, long ldc) {
    long j0 = 0;
    for (; j0 + 32 <= Nc; j0 += 32) {
        for (long k0 = 0; k0 < K; k0 += SG_KC) {
            const long k1 = k0 + SG_KC < K ? k0 + SG_KC : K;
            const int fresh = k0 == 0 && beta == 0.0f;  /* else accumulate into C */
            long i0 = 0;
            for (; i0 + 8 <= M; i0 += 8) {
                v16f acc[8][2];
                for (int r = 0; r < 8; r++) {
                    if (fresh) {
                        acc[r][0] = (v16f){0};
                        acc[r][1] = (v16f){0};
                    } else {
                        acc[r][0] = *(const v16f *)(C + (i0 + r) * ldc + j0);
                        acc[r][1] = *(const v16f *)(C + (i0 + r) * ldc + j0 + 16);
                    }
                }
                const float *a = A + i0 * lda;
                for (long k = k0; k < k1; k++) {
                    const v16f b0 = *(const v16f *)(B + k * ldb + j0);
                    const v16f b1 = *(const v16f *)(B + k * ldb + j0 + 16);
                    for (int r = 0; r < 8; r++) {
                        const float ar = a[r * lda + k];
                        acc[r][0] += ar * b0;
                        acc[r][1] += ar * b1;
                    }
                }
                for (int r = 0; r < 8; r++) {
                    *(v16f *)(C + (i0 + r) * ldc + j0) = acc[r][0];
                    *(v16f *)(C + (i0 + r) * ldc + j0 + 16) = acc[r][1];
                }
            }
            for (; i0 < M; i0++) {  /* rows left over: one at a time */
                v16f acc0 = fresh ? (v16f){0} : *(const v16f *)(C + i0 * ldc + j0);
                v16f acc1 = fresh ? (v16f){0} : *(const v16f *)(C + i0 * ldc + j0 + 16);
                for (long k = k0; k < k1; k++) {
                    const float ar = A[i0 * lda + k];
                    acc0 += ar * *(const v16f *)(B + k * ldb + j0);
                    acc1 += ar * *(const v16f *)(B + k * ldb + j0 + 16);
                }
                *(v16f *)(C + i0 * ldc + j0) = acc0;
                *(v16f *)(C + i0 * ldc + j0 + 16) = acc1;
            }
        }
    }
    for (long i = 0; i < M && j0 < Nc; i++)  /* columns left over */
        for (long j = j0; j < Nc; j++) {
            float acc = beta == 0.0f ? 0.0f : C[i * ldc + j];
            for (long k = 0; k < K; k++) acc += A[i * lda + k] * B[k * ldb + j];
            C[i * ldc + j] = acc;
        }
}

/* ilp64 carries a third flag from Python: bit 1 set = use sgemm_small for batches above one row. */
static inline void sgemm(void *fns, int flags, int unused, long M, long Nc, long K, const float *A,
                         long lda, const float *B, long ldb, float beta, float *C, long ldc) {
    /* Measured on the 2-core Xeon: ahead of OpenBLAS up to a 256 KB B (H = 128), level or behind above. */
    if ((flags & 2) && M > 1 && K * Nc <= 65536)
        sgemm_small(M, Nc, K, A, lda, B, ldb, beta, C, ldc);
    else
        sgemm_blas(fns, flags & 1, unused, M, Nc, K, A, lda, B, ldb, beta, C, ldc);
}

EXPORT int rnnkit_kernels_version(void) { return 5; }

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
