/* rnnkit_kernels.h: what every compiled loop of rnnkit shares (the cells' sources, flat.c, and a cell
 * added from outside the package). A source is compiled through instantiate.c, which includes it twice,
 * once with R = float and once with R = double (rnnkit/kernels/build.py); its entry points are written
 *     EXPORT void FN(name)(long T, long N, long H, long n0, long n1, ..., void *gemm, int ilp64)
 * and rnnkit/kernels/cinterface.py reads each prototype from the source to call it by argument name.
 *
 * The matrix products call the CBLAS gemm that NumPy links (passed in as a function pointer, with flags
 * saying whether its integers are 64-bit and whether the small-batch gemm below is wanted), so no BLAS is
 * linked here. float32 tanh is a rational function below; float64 tanh is libm's, vectorised through
 * glibc's libmvec where available (RNNKIT_MVEC).
 */
#ifndef RNNKIT_KERNELS_H
#define RNNKIT_KERNELS_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))

#if defined(RNNKIT_MVEC)
/* glibc's <bits/math-vector.h> declares these only under -ffast-math, which we do not want. */
__attribute__((simd("notinbranch"))) double tanh(double);
__attribute__((simd("notinbranch"))) double exp(double);
__attribute__((simd("notinbranch"))) float expf(float);
__attribute__((simd("notinbranch"))) double log1p(double);
__attribute__((simd("notinbranch"))) float log1pf(float);
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
    static inline void name(void *fns, int ilp64, const T *packed, long M, long Nc, long K,            \
                            const T *A, long lda, const T *B, long ldb, T beta, T *C, long ldc) {     \
        void **f = (void **)fns;                                                                      \
        (void)packed;                                                                                 \
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

/* The per-step product of a small batch, float32: C (M,Nc) = A (M,K) @ B (K,Nc) + beta C, with 4 x 64
 * accumulators held in vector registers (16 of AVX-512's 32; 4 more hold a row of the panel). B (Wh) is
 * the same matrix at every step, so it is packed once per call of a time loop (`pack_panels`) into
 * panels of 64 columns, each K x 64 and contiguous: a step then streams every panel once, in order,
 * while every 4-row tile of A passes over its L1-resident chunk. BLAS packs the whole of B again at
 * every product, which for a batch of 32 costs about as much as the product. The 4 x 64 tile loads 8
 * vectors per 16 multiply-adds; it ran 1.1-1.2x the earlier 8 x 32 tile (10 loads per 16) at the
 * per-thread shapes of a batch of 32, H = 128 and 256 (docs/BENCHMARKS.md). GCC vector extensions:
 * AVX-512 with -march=native, split into narrower vectors elsewhere. Columns past the last full panel
 * fall back to plain loops over the unpacked B. */
typedef float v16f __attribute__((vector_size(64), aligned(4)));

#define SG_KC 128 /* K chunk: a 128 x 64 panel chunk is 32 KB, resident in L1 while A's row tiles pass */
#define SG_MR 4   /* tile rows */
#define SG_NV 4   /* tile width in 16-float vectors */
#define SG_NR (16 * SG_NV) /* panel width */

/* B (K,Nc) row-major -> panels [Nc/64][K][64]; NULL when there is no full panel (or no memory). */
static float *pack_panels(const float *B, long K, long Nc, long ldb) {
    const long P = Nc / SG_NR;
    if (P == 0) return NULL;
    float *out = aligned_alloc(64, (size_t)(P * K * SG_NR) * sizeof(float));
    if (!out) return NULL;
    for (long p = 0; p < P; p++)
        for (long k = 0; k < K; k++)
            memcpy(out + (p * K + k) * SG_NR, B + k * ldb + p * SG_NR, SG_NR * sizeof(float));
    return out;
}

/* C[rows, 64] (+)= A[rows, k0:k1] @ panel[k0:k1, 64] for rows <= SG_MR: one register tile. */
static inline __attribute__((always_inline)) void sg_tile(long rows, long k0, long k1, const float *A,
                                                          long lda, const float *panel, float *C,
                                                          long ldc, int fresh) {
    v16f acc[SG_MR][SG_NV];
    for (int r = 0; r < SG_MR; r++)
        for (int v = 0; v < SG_NV; v++)
            acc[r][v] = fresh || r >= rows ? (v16f){0} : *(const v16f *)(C + r * ldc + 16 * v);
    for (long k = k0; k < k1; k++) {
        v16f bk[SG_NV];
        for (int v = 0; v < SG_NV; v++) bk[v] = *(const v16f *)(panel + k * SG_NR + 16 * v);
        for (int r = 0; r < SG_MR; r++) {
            const float ar = r < rows ? A[r * lda + k] : 0.0f;
            for (int v = 0; v < SG_NV; v++) acc[r][v] += ar * bk[v];
        }
    }
    for (int r = 0; r < rows; r++)
        for (int v = 0; v < SG_NV; v++) *(v16f *)(C + r * ldc + 16 * v) = acc[r][v];
}

static void sgemm_small(long M, long Nc, long K, const float *A, long lda, const float *B, long ldb,
                        const float *Bp, float beta, float *C, long ldc) {
    long j0 = 0;
    for (; j0 + SG_NR <= Nc; j0 += SG_NR) {
        const float *panel = Bp + (j0 / SG_NR) * K * SG_NR;
        for (long k0 = 0; k0 < K; k0 += SG_KC) {
            const long k1 = k0 + SG_KC < K ? k0 + SG_KC : K;
            const int fresh = k0 == 0 && beta == 0.0f;  /* else accumulate into C */
            long i0 = 0;
            for (; i0 + SG_MR <= M; i0 += SG_MR)
                sg_tile(SG_MR, k0, k1, A + i0 * lda, lda, panel, C + i0 * ldc + j0, ldc, fresh);
            for (; i0 < M; i0++)  /* rows left over: one at a time */
                sg_tile(1, k0, k1, A + i0 * lda, lda, panel, C + i0 * ldc + j0, ldc, fresh);
        }
    }
    for (long i = 0; i < M && j0 < Nc; i++)  /* columns left over */
        for (long j = j0; j < Nc; j++) {
            float acc = beta == 0.0f ? 0.0f : C[i * ldc + j];
            for (long k = 0; k < K; k++) acc += A[i * lda + k] * B[k * ldb + j];
            C[i * ldc + j] = acc;
        }
}

/* flags from Python: bit 0 = the BLAS takes 64-bit integers; bit 1 = use the small-batch gemm above
 * (float32, more than one row). */
static inline int use_small(int flags) { return (flags & 2) != 0; }

static inline void sgemm(void *fns, int flags, const float *packed, long M, long Nc, long K,
                         const float *A, long lda, const float *B, long ldb, float beta, float *C,
                         long ldc) {
    if (M > 1 && packed)
        sgemm_small(M, Nc, K, A, lda, B, ldb, packed, beta, C, ldc);
    else
        sgemm_blas(fns, flags & 1, NULL, M, Nc, K, A, lda, B, ldb, beta, C, ldc);
}

/* The packed B of a time loop's per-step product, or NULL for BLAS (double, one row, or not chosen). */
static float *spack(int flags, long M, const float *B, long K, long Nc) {
    return M > 1 && use_small(flags) ? pack_panels(B, K, Nc, Nc) : NULL;
}
static double *dpack(int flags, long M, const double *B, long K, long Nc) {
    (void)flags; (void)M; (void)B; (void)K; (void)Nc;
    return NULL;
}

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

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, SFX)

/* sigmoid(a) = 0.5 tanh(0.5 a) + 0.5: never overflows, the same formula as the NumPy references. */
#define SIGM(v) ((R)0.5 * TANH((R)0.5 * (v)) + (R)0.5)

#endif
