/* bf16 matrix products with float32 accumulation (mixed precision), on the best unit the CPU has:
 *
 *     C (M,N) f32 (+)= bf16(A) (M,K) @ bf16(B) (K,N)       bf16(x): x rounded to 8 mantissa bits
 *
 * tier 2, AMX: Intel's tile units (TDPBF16PS: a 16 x 16 float32 tile += 16 x 32 bf16 @ 32 x 16 bf16);
 * tier 1, AVX512_BF16: VDPBF16PS on vector registers (16 float32 lanes += 16 pairs x 16 pairs).
 * Which tier this CPU, its OS and this compiler allow is found at run time (`rnnkit_bf16_probe`); the
 * tier below them all is float32 BLAS, chosen in Python (rnnkit/kernels/bf16.py).
 *
 * Both tiers read B from the same packed layout, made once per weight (`rnnkit_bf16_pack`): panels of
 * 64 columns, each [K/2][64][2] bf16, the two values of one column at rows 2p and 2p+1 side by side
 * (the "VNNI pair" both instructions multiply and add at once). K is padded with zeros to a multiple
 * of 32 (one tile's depth), N to a multiple of 64. A tile of B (16 pairs x 16 columns) is then rows of
 * 64 bytes at a stride of 256, and one pair-row of a panel is four 512-bit vectors.
 *
 * A is converted per call into a zero-padded bf16 buffer (rows to a multiple of 32, K as B's), by
 * round-to-nearest-even, the same on every tier and in the NumPy reference (bf16.py `to_bf16`).
 *
 * Everything that needs an instruction set the build flags may lack carries its own target attribute,
 * so this file compiles with any x86-64 GCC >= 11 or clang >= 12, with or without -march=native; with
 * an older compiler, or on another architecture, the tiers it cannot build are left out and
 * `rnnkit_bf16_probe` says so. The source is included twice by instantiate.c (float, double): the
 * guard below keeps one copy.
 */
#ifndef RNNKIT_BF16_C
#define RNNKIT_BF16_C

#define BF_KP 32   /* K padding: one tile's depth in bf16 values */
#define BF_MP 32   /* row padding of the converted A: two tiles' rows */
#define BF_NR 64   /* panel width in columns */
#define BF_KC 256  /* AVX-512 K chunk: a 256 x 64 bf16 panel chunk (32 KB) stays in L1 */
#define BF_MR 4    /* AVX-512 register tile rows (4 x 4 vectors of accumulators) */
#define AMX_KC 1024 /* AMX K chunk and column group: 1024 x 256 bf16 of B (512 KB) stay in L2 */
#define AMX_NC 256

#if defined(__x86_64__) && (defined(__clang__) ? __clang_major__ >= 12 : __GNUC__ >= 11)
#define BF_X86 1
#include <cpuid.h>
#include <immintrin.h>
#if defined(__linux__)
#include <errno.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif
#define BF_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#define BF_AMX __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,amx-tile,amx-bf16")))
#else
#define BF_X86 0
#endif

static inline long bf_round_up(long x, long m) { return (x + m - 1) / m * m; }

/* float32 -> bf16 bits, round to nearest even; NaN stays a (quiet) NaN. */
static inline uint16_t bf_from_f32(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    const uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? (u >> 16) | 0x40 : r);
}

/* uint16 elements of B packed for K x N (what Python allocates). */
EXPORT long rnnkit_bf16_packed_size(long K, long N) {
    return bf_round_up(N, BF_NR) * bf_round_up(K, BF_KP);
}

/* B (K,N) float32, row stride ldb -> Bp, panels [N/64][Kp/2][64][2] of bf16, zero past K and N. */
EXPORT void rnnkit_bf16_pack(long K, long N, const float *B, long ldb, uint16_t *Bp) {
    const long Q = bf_round_up(N, BF_NR) / BF_NR, P = bf_round_up(K, BF_KP) / 2;
    for (long q = 0; q < Q; q++)
        for (long p = 0; p < P; p++) {
            uint16_t *row = Bp + (q * P + p) * BF_NR * 2;
            if (2 * p + 1 < K && (q + 1) * BF_NR <= N) { /* a whole pair-row: the loop vectorises */
                const float *r0 = B + 2 * p * ldb + q * BF_NR, *r1 = r0 + ldb;
                VEC for (long j = 0; j < BF_NR; j++) {
                    row[2 * j] = bf_from_f32(r0[j]);
                    row[2 * j + 1] = bf_from_f32(r1[j]);
                }
                continue;
            }
            for (long j = 0; j < BF_NR; j++) {
                const long n = q * BF_NR + j;
                for (int e = 0; e < 2; e++) {
                    const long k = 2 * p + e;
                    row[2 * j + e] = k < K && n < N ? bf_from_f32(B[k * ldb + n]) : 0;
                }
            }
        }
}

/* A (M,K), float32 (A) or bf16 bits (Ab), row stride lda -> out, a zero-padded (Mp, Kp) bf16 buffer. */
static void bf_convert_into(long M, long K, const float *A, const uint16_t *Ab, long lda, long Mp,
                            long Kp, uint16_t *out) {
    for (long i = 0; i < Mp; i++) {
        uint16_t *o = out + i * Kp;
        long k = 0;
        if (i < M) {
            if (A) {
                const float *a = A + i * lda;
                VEC for (k = 0; k < K; k++) o[k] = bf_from_f32(a[k]);
            } else {
                memcpy(o, Ab + i * lda, (size_t)K * sizeof(uint16_t));
            }
            k = K;
        }
        for (; k < Kp; k++) o[k] = 0;
    }
}

static uint16_t *bf_convert_a(long M, long K, const float *A, const uint16_t *Ab, long lda, long Mp,
                              long Kp) {
    uint16_t *out = aligned_alloc(64, (size_t)(Mp * Kp) * sizeof(uint16_t));
    if (out) bf_convert_into(M, K, A, Ab, lda, Mp, Kp, out);
    return out;
}

#if BF_X86
/* ---- tier 1: AVX512_BF16 ------------------------------------------------------------------------ */

/* C[rows, 64 (ncols valid)] (+)= Abf[rows, pairs p0:p1] @ panel[p0:p1]: a 4 x 64 register tile.
 * A's pair (2p, 2p+1) of a row is one 32-bit broadcast; each VDPBF16PS adds both products of a
 * pair. */
BF_AVX512 static void bf_tile_avx512(long rows, long ncols, long p0, long p1, const uint16_t *Abf,
                                     long Kp, const uint16_t *panel, float *C, long ldc, int fresh) {
    __m512 acc[BF_MR][4];
    __mmask16 m[4];
    for (int v = 0; v < 4; v++) {
        const long left = ncols - 16 * v;
        m[v] = left >= 16 ? (__mmask16)0xffff : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);
    }
    for (int r = 0; r < BF_MR; r++)
        for (int v = 0; v < 4; v++)
            acc[r][v] = fresh || r >= rows ? _mm512_setzero_ps()
                                           : _mm512_maskz_loadu_ps(m[v], C + r * ldc + 16 * v);
    for (long p = p0; p < p1; p++) {
        const uint16_t *b = panel + p * BF_NR * 2;
        __m512bh bv[4];
        for (int v = 0; v < 4; v++) bv[v] = (__m512bh)_mm512_loadu_si512((const void *)(b + 32 * v));
        for (int r = 0; r < BF_MR; r++) {
            int32_t pair;
            memcpy(&pair, Abf + r * Kp + 2 * p, 4);
            const __m512bh a = (__m512bh)_mm512_set1_epi32(pair);
            for (int v = 0; v < 4; v++) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], a, bv[v]);
        }
    }
    for (int r = 0; r < rows; r++)
        for (int v = 0; v < 4; v++) _mm512_mask_storeu_ps(C + r * ldc + 16 * v, m[v], acc[r][v]);
}

/* Rows of Abf beyond M are zeros (the buffer is padded), so a tile may read them; it writes only
 * the `rows` that exist. */
BF_AVX512 static void bf_gemm_avx512(long M, long N, long Kp, const uint16_t *Abf, const uint16_t *Bp,
                                     float *C, long ldc, int accumulate) {
    const long Q = bf_round_up(N, BF_NR) / BF_NR, P = Kp / 2;
    for (long pc = 0; pc < P; pc += BF_KC / 2) {
        const long pe = pc + BF_KC / 2 < P ? pc + BF_KC / 2 : P;
        const int fresh = pc == 0 && !accumulate;
        for (long q = 0; q < Q; q++) {
            const uint16_t *panel = Bp + q * P * BF_NR * 2;
            const long ncols = N - q * BF_NR < BF_NR ? N - q * BF_NR : BF_NR;
            for (long i = 0; i < M; i += BF_MR)
                bf_tile_avx512(M - i < BF_MR ? M - i : BF_MR, ncols, pc, pe, Abf + i * Kp, Kp, panel,
                               C + i * ldc + q * BF_NR, ldc, fresh);
        }
    }
}

/* ---- tier 2: AMX -------------------------------------------------------------------------------- */

/* The tile configuration: palette 1, all eight tiles 16 rows of 64 bytes (C: 16 x 16 float32; A: 16
 * rows x 32 bf16; B: 16 pairs x 16 columns x 2 bf16). */
typedef struct {
    uint8_t palette_id;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} bf_tilecfg;

BF_AMX static void bf_amx_configure(void) {
    bf_tilecfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette_id = 1;
    for (int t = 0; t < 8; t++) {
        cfg.colsb[t] = 64;
        cfg.rows[t] = 16;
    }
    _tile_loadconfig(&cfg);
}

/* A C tile's source before its products, and its destination after: C itself where the 16 x 16 tile
 * lies wholly inside it, else a scratch tile holding the part that does (zeros elsewhere). */
typedef struct {
    float *at;
    long stride; /* bytes */
    long rows, cols; /* the part inside C: 0 rows when the tile is past its end */
    float *c;
    long ldc;
} bf_ctile;

static void bf_ctile_open(bf_ctile *t, float *scratch, float *C, long ldc, long i, long j, long M,
                          long N, int fresh) {
    t->rows = M - i < 16 ? (M - i > 0 ? M - i : 0) : 16;
    t->cols = N - j < 16 ? (N - j > 0 ? N - j : 0) : 16;
    t->c = C + i * ldc + j;
    t->ldc = ldc;
    if (t->rows == 16 && t->cols == 16) {
        t->at = t->c;
        t->stride = ldc * (long)sizeof(float);
        return;
    }
    t->at = scratch;
    t->stride = 64;
    memset(scratch, 0, 16 * 16 * sizeof(float));
    if (!fresh)
        for (long r = 0; r < t->rows; r++)
            memcpy(scratch + 16 * r, t->c + r * ldc, (size_t)t->cols * sizeof(float));
}

static void bf_ctile_close(const bf_ctile *t) {
    if (t->at == t->c) return;
    for (long r = 0; r < t->rows; r++)
        memcpy(t->c + r * t->ldc, t->at + 16 * r, (size_t)t->cols * sizeof(float));
}

/* C[i:i+32, j:j+32] (+)= Abf[i:i+32, k0:k1] @ B[k0:k1, j:j+32]: four C tiles (tmm0-3) from two A
 * tiles (tmm4, 5) and two B tiles (tmm6, 7). b: the B panel's row of pair k0/2 at column j % 64. */
BF_AMX static void bf_block_amx(long i, long j, long k0, long k1, long M, long N, const uint16_t *Abf,
                                long Kp, const uint16_t *b, float *C, long ldc, int fresh,
                                float *scratch) {
    bf_ctile t[4];
    for (int a = 0; a < 2; a++)
        for (int c = 0; c < 2; c++)
            bf_ctile_open(&t[2 * a + c], scratch + 256 * (2 * a + c), C, ldc, i + 16 * a, j + 16 * c,
                          M, N, fresh);
    /* a fresh tile inside C starts at zero; an edge tile loads its scratch (zeroed if fresh) */
    if (fresh && t[0].at == t[0].c) _tile_zero(0); else _tile_loadd(0, t[0].at, t[0].stride);
    if (fresh && t[1].at == t[1].c) _tile_zero(1); else _tile_loadd(1, t[1].at, t[1].stride);
    if (fresh && t[2].at == t[2].c) _tile_zero(2); else _tile_loadd(2, t[2].at, t[2].stride);
    if (fresh && t[3].at == t[3].c) _tile_zero(3); else _tile_loadd(3, t[3].at, t[3].stride);
    const long bstride = BF_NR * 2 * (long)sizeof(uint16_t); /* one pair-row of a panel: 256 bytes */
    for (long k = k0; k < k1; k += BF_KP) {
        const uint16_t *a = Abf + i * Kp + k, *bk = b + (k - k0) / 2 * BF_NR * 2;
        _tile_loadd(4, a, Kp * (long)sizeof(uint16_t));
        _tile_loadd(5, a + 16 * Kp, Kp * (long)sizeof(uint16_t));
        _tile_loadd(6, bk, bstride);
        _tile_loadd(7, bk + 16 * 2, bstride);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, t[0].at, t[0].stride);
    _tile_stored(1, t[1].at, t[1].stride);
    _tile_stored(2, t[2].at, t[2].stride);
    _tile_stored(3, t[3].at, t[3].stride);
    for (int q = 0; q < 4; q++) bf_ctile_close(&t[q]);
}

/* Abf has Mp = M rounded up to 32 rows (zeros past M) and Kp columns; N is padded in Bp to 64, so
 * every tile read stays inside the buffers; only C's edges need the scratch tiles. */
BF_AMX static void bf_gemm_amx(long M, long N, long Kp, const uint16_t *Abf, const uint16_t *Bp,
                               float *C, long ldc, int accumulate) {
    float scratch[4 * 256] __attribute__((aligned(64)));
    const long P = Kp / 2, Np = bf_round_up(N, BF_NR);
    bf_amx_configure();
    for (long kc = 0; kc < Kp; kc += AMX_KC) {
        const long ke = kc + AMX_KC < Kp ? kc + AMX_KC : Kp;
        const int fresh = kc == 0 && !accumulate;
        for (long jc = 0; jc < Np; jc += AMX_NC) {
            const long je = jc + AMX_NC < Np ? jc + AMX_NC : Np;
            for (long i = 0; i < M; i += 32)
                for (long j = jc; j < je; j += 32) {
                    const uint16_t *b = Bp + ((j / BF_NR) * P + kc / 2) * BF_NR * 2 + (j % BF_NR) * 2;
                    bf_block_amx(i, j, kc, ke, M, N, Abf, Kp, b, C, ldc, fresh, scratch);
                }
        }
    }
    _tile_release();
}
#endif /* BF_X86 */

/* ---- the products on a converted A, and the LSTM's time loops around them ---------------------- */

/* C (M,N) (+)= Abf (M rows of a buffer padded to 32 rows, Kp columns) @ Bp on `tier`. */
static int bf_gemm_tier(int tier, long M, long N, long Kp, const uint16_t *Abf, const uint16_t *Bp,
                        float *C, long ldc, int accumulate) {
#if BF_X86
    if (tier == 2)
        bf_gemm_amx(M, N, Kp, Abf, Bp, C, ldc, accumulate);
    else if (tier == 1)
        bf_gemm_avx512(M, N, Kp, Abf, Bp, C, ldc, accumulate);
    else
        return 2;
    return 0;
#else
    (void)M; (void)N; (void)Kp; (void)Abf; (void)Bp; (void)C; (void)ldc; (void)accumulate;
    (void)tier;
    return 2;
#endif
}

/* Rows [m0, m1) of the converted A^T: out (Mp, Kp) row i = bf16(A[:, i]) for A (K, M) float32 of
 * row stride lda, zeros past K. The rows from Mp's padding are the caller's (zeroed once). Blocks of
 * 16 columns of A: each row of A is read 64 bytes at a time, and 16 rows of out are written in turn. */
EXPORT void rnnkit_bf16_convert_t(long M, long K, const float *A, long lda, long m0, long m1,
                                  uint16_t *out, long Kp) {
    (void)M;
    for (long i0 = m0; i0 < m1; i0 += 16) {
        const long i1 = i0 + 16 < m1 ? i0 + 16 : m1;
        for (long k = 0; k < K; k++) {
            const float *a = A + k * lda;
            for (long i = i0; i < i1; i++) out[i * Kp + k] = bf_from_f32(a[i]);
        }
        for (long i = i0; i < i1; i++)
            for (long k = K; k < Kp; k++) out[i * Kp + k] = 0;
    }
}

/* C (M,N) (+)= Abf @ Bp with A converted already (rnnkit_bf16_convert_t; Abf's rows padded to 32
 * past M). Returns as rnnkit_bf16_gemm. */
EXPORT int rnnkit_bf16_gemm_converted(int tier, long M, long N, long Kp, const uint16_t *Abf,
                                      const uint16_t *Bp, float *C, long ldc, int accumulate) {
    if (M <= 0 || N <= 0) return 0;
    return bf_gemm_tier(tier, M, N, Kp, Abf, Bp, C, ldc, accumulate);
}

#define BF_SIGM(v) (0.5f * tanh_f32(0.5f * (v)) + 0.5f)

/* The bf16-mixed LSTM forward over the batch rows [n0, n1) (the float32 loop is lstm.c's lstm_fw, and
 * every element-wise line here is the same as its lstm_cell):
 *     a_t = gates_t + bf16(h_{t-1}) bf16(Wh) + b            (float32 sums)
 * gates (T,N,4H) hold x_t Wx on entry, the activations [i,f,o,g] on return; h, c (T+1,N,H) with h[0],
 * c[0] set; tanh_c (T,N,H); Whp: Wh (H,4H) packed (rnnkit_bf16_pack); b (4H); mask (T,N) or NULL.
 * h_{t-1} is rounded into one bf16 buffer per call. Returns as rnnkit_bf16_gemm. */
EXPORT int rnnkit_bf16_lstm_fw(int tier, long T, long N, long H, long n0, long n1, float *gates,
                               float *h, float *c, float *tanh_c, const uint16_t *Whp, const float *b,
                               const unsigned char *mask) {
    const long G = 4 * H, NH = N * H, M = n1 - n0;
    if (M <= 0 || T <= 0) return 0;
    if (tier != 1 && tier != 2) return 2;
    const long Kp = bf_round_up(H, BF_KP), Mp = bf_round_up(M, BF_MP);
    uint16_t *A = aligned_alloc(64, (size_t)(Mp * Kp) * sizeof(uint16_t));
    if (!A) return 1;
    int rc = 0;
    for (long t = 0; t < T && !rc; t++) {
        float *a = gates + t * N * G;
        const float *hp = h + t * NH, *cp = c + t * NH;
        float *hn = h + (t + 1) * NH, *cn = c + (t + 1) * NH, *tc = tanh_c + t * NH;
        bf_convert_into(M, H, hp + n0 * H, NULL, H, Mp, Kp, A);
        rc = bf_gemm_tier(tier, M, G, Kp, A, Whp, a + n0 * G, G, 1); /* a += h_{t-1} Wh */
        for (long n = n0; n < n1; n++) {
            float *an = a + n * G, *cnn = cn + n * H, *tcn = tc + n * H, *hnn = hn + n * H;
            const float *cpn = cp + n * H, *hpn = hp + n * H;
            VEC for (long j = 0; j < 3 * H; j++) an[j] = BF_SIGM(an[j] + b[j]); /* i, f, o */
            VEC for (long j = 3 * H; j < G; j++) an[j] = tanh_f32(an[j] + b[j]); /* g */
            const float *i = an, *f = an + H, *o = an + 2 * H, *g = an + 3 * H;
            VEC for (long j = 0; j < H; j++) cnn[j] = f[j] * cpn[j] + i[j] * g[j];
            VEC for (long j = 0; j < H; j++) tcn[j] = tanh_f32(cnn[j]);
            VEC for (long j = 0; j < H; j++) hnn[j] = o[j] * tcn[j];
            if (mask && !mask[t * N + n]) { /* a padded step carries the state */
                memcpy(cnn, cpn, (size_t)H * sizeof(float));
                memcpy(hnn, hpn, (size_t)H * sizeof(float));
            }
        }
    }
    free(A);
    return rc;
}

/* The bf16-mixed LSTM BPTT over the batch rows [n0, n1): lstm.c's lstm_bw, element-wise in float32
 * line for line, with the step's product in bf16:
 *     dh_{t-1} = bf16(da_t) bf16(Wh^T)                       (float32 sums)
 * WhTp: Wh^T (4H,H) packed. The other arguments as lstm_bw's. Returns as rnnkit_bf16_gemm. */
EXPORT int rnnkit_bf16_lstm_bw(int tier, long T, long N, long H, long n0, long n1, const float *dh,
                               const float *gates, const float *c, const float *tanh_c,
                               const uint16_t *WhTp, const unsigned char *mask, float *dh_next,
                               float *dc_next, float *da, float *dht, float *trace_dh,
                               float *trace_dc) {
    const long G = 4 * H, NH = N * H, M = n1 - n0;
    if (M <= 0 || T <= 0) return 0;
    if (tier != 1 && tier != 2) return 2;
    const long Kp = bf_round_up(G, BF_KP), Mp = bf_round_up(M, BF_MP);
    uint16_t *A = aligned_alloc(64, (size_t)(Mp * Kp) * sizeof(uint16_t));
    if (!A) return 1;
    int rc = 0;
    for (long t = T - 1; t >= 0 && !rc; t--) {
        const float *a = gates + t * N * G, *cp = c + t * NH, *tc = tanh_c + t * NH, *dhs = dh + t * NH;
        float *dat = da + t * N * G;
        for (long n = n0; n < n1; n++) {
            const int m = mask ? mask[t * N + n] != 0 : 1;
            const float *an = a + n * G, *cpn = cp + n * H, *tcn = tc + n * H, *dhn = dhs + n * H;
            const float *i = an, *f = an + H, *o = an + 2 * H, *g = an + 3 * H;
            float *d = dat + n * G, *dhtn = dht + n * H, *dhx = dh_next + n * H, *dcx = dc_next + n * H;
            float *di = d, *df = d + H, *dox = d + 2 * H, *dg = d + 3 * H;
            if (m) {
                VEC for (long j = 0; j < H; j++) dhtn[j] = dhn[j] + dhx[j];
                if (trace_dh) for (long j = 0; j < H; j++) trace_dh[(t + 1) * NH + n * H + j] = dhtn[j];
                VEC for (long j = 0; j < H; j++) {
                    float ht = dhtn[j], tj = tcn[j];
                    float dc = dcx[j] + ht * o[j] * (1.0f - tj * tj); /* dc = dc_next + dh o (1 - tanh^2 c) */
                    float ij = i[j], fj = f[j], oj = o[j], gj = g[j];
                    dox[j] = ht * tj * oj * (1.0f - oj);     /* do, through the sigmoid */
                    df[j] = dc * cpn[j] * fj * (1.0f - fj);  /* df = dc c_{t-1} */
                    di[j] = dc * gj * ij * (1.0f - ij);      /* di = dc g */
                    dg[j] = dc * ij * (1.0f - gj * gj);      /* dg = dc i, through the tanh */
                    dcx[j] = dc;
                }
                if (trace_dc) for (long j = 0; j < H; j++) trace_dc[(t + 1) * NH + n * H + j] = dcx[j];
                VEC for (long j = 0; j < H; j++) dcx[j] *= f[j]; /* dc_{t-1} = dc f */
            } else { /* a padded step receives no gradient and passes the state gradient through */
                for (long j = 0; j < H; j++) dhtn[j] = dhx[j];
                if (trace_dh) for (long j = 0; j < H; j++) trace_dh[(t + 1) * NH + n * H + j] = dhtn[j];
                if (trace_dc) for (long j = 0; j < H; j++) trace_dc[(t + 1) * NH + n * H + j] = dcx[j];
                for (long j = 0; j < G; j++) d[j] = 0;
            }
        }
        bf_convert_into(M, G, dat + n0 * G, NULL, G, Mp, Kp, A);
        rc = bf_gemm_tier(tier, M, H, Kp, A, WhTp, dh_next + n0 * H, H, 0); /* dh_{t-1} = da Wh^T */
        if (mask)
            for (long n = n0; n < n1; n++)
                if (!mask[t * N + n])
                    for (long j = 0; j < H; j++) dh_next[n * H + j] = dht[n * H + j];
    }
    free(A);
    return rc;
}

/* What this CPU, OS and build allow, into out[0..6]: the CPU has AMX-BF16 + AMX-TILE (CPUID 7.0
 * EDX bits 22, 24); has AVX512_BF16 (7.1 EAX bit 5) and AVX-512F (7.0 EBX bit 16); the OS saves the
 * AVX-512 state (XCR0 bits 1, 2, 5-7); the OS enables tile state (XCR0 bits 17, 18); AMX compiled
 * in; AVX512_BF16 compiled in. */
EXPORT void rnnkit_bf16_probe(int *out) {
    for (int i = 0; i < 7; i++) out[i] = 0;
#if BF_X86
    unsigned a, b, c, d;
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
        out[0] = (d >> 22 & 1) && (d >> 24 & 1);
        const int f = b >> 16 & 1;
        if (a >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d)) out[1] = f && (a >> 5 & 1);
    }
    if (__get_cpuid(1, &a, &b, &c, &d) && (c >> 27 & 1)) { /* OSXSAVE: XGETBV may run */
        unsigned lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        out[2] = (lo & 0xe6) == 0xe6;
        out[3] = (lo >> 17 & 3) == 3;
    }
    out[4] = 1;
    out[5] = 1;
#endif
}

/* Linux's permission for this process's threads to use tile data (arch_prctl ARCH_REQ_XCOMP_PERM,
 * XFEATURE_XTILEDATA = 18): 0 granted (or held already), else the errno; -1 where there is no such
 * request (not Linux: the OS either enables tiles outright or not at all, which XCR0 tells). */
EXPORT int rnnkit_bf16_request_amx(void) {
#if BF_X86 && defined(__linux__) && defined(SYS_arch_prctl)
    enum { GET_PERM = 0x1022, REQ_PERM = 0x1023, XTILEDATA = 18 };
    unsigned long bits = 0;
    if (syscall(SYS_arch_prctl, GET_PERM, &bits) == 0 && (bits >> XTILEDATA & 1)) return 0;
    if (syscall(SYS_arch_prctl, REQ_PERM, XTILEDATA) != 0) return errno ? errno : -2;
    bits = 0;
    if (syscall(SYS_arch_prctl, GET_PERM, &bits) != 0 || !(bits >> XTILEDATA & 1)) return -3;
    return 0;
#else
    return -1;
#endif
}

/* C (M,N) (+)= bf16(A) (M,K) @ B (packed by rnnkit_bf16_pack for K x N) on `tier` (2 AMX, 1
 * AVX512_BF16): A float32 (A) or bf16 bits (Ab, then A is NULL), row strides lda and ldc.
 * accumulate: add into C, else overwrite it. Returns 0, 1 when out of memory, 2 for a tier this build
 * or CPU cannot run (the caller checked the tier with rnnkit_bf16_probe: a slip is not a crash). */
EXPORT int rnnkit_bf16_gemm(int tier, long M, long N, long K, const float *A, const uint16_t *Ab,
                            long lda, const uint16_t *Bp, float *C, long ldc, int accumulate) {
    if (M <= 0 || N <= 0) return 0;
    if (K <= 0) { /* an empty sum */
        if (!accumulate)
            for (long i = 0; i < M; i++) memset(C + i * ldc, 0, (size_t)N * sizeof(float));
        return 0;
    }
#if BF_X86
    if (tier != 1 && tier != 2) return 2;
    const long Kp = bf_round_up(K, BF_KP), Mp = bf_round_up(M, BF_MP);
    uint16_t *Abf = bf_convert_a(M, K, A, Ab, lda, Mp, Kp);
    if (!Abf) return 1;
    if (tier == 2)
        bf_gemm_amx(M, N, Kp, Abf, Bp, C, ldc, accumulate);
    else
        bf_gemm_avx512(M, N, Kp, Abf, Bp, C, ldc, accumulate);
    free(Abf);
    return 0;
#else
    (void)tier; (void)K; (void)A; (void)Ab; (void)lda; (void)Bp; (void)C; (void)ldc; (void)accumulate;
    return 2;
#endif
}

#endif /* RNNKIT_BF16_C */
