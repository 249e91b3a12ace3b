/* Mamba's selective scan, forward and BPTT, with the softplus of the step sizes, the skip term and the
 * gate silu(z) fused in, as selective_scan_fn fuses them. Compiled through rnnkit/kernels/instantiate.c,
 * once for float and once for double (R, FN, EXP, LOG1P: rnnkit/kernels/rnnkit_kernels.h). Each function
 * mirrors the NumPy reference of the same name and arguments in rnnkit/cells/mamba.py (same buffers,
 * same masking rules); the reference is the specification and tests/test_mamba.py checks the two agree.
 *
 * Layouts are row-major and contiguous; H is the scan's channel count (the block's E), the loop's row
 * width. xs, pre, y, out (T,N,H); dbc (T,N,rank+2S) = [dt_low | B | C]; xz (T,N,2H), z its second half;
 * At (S,H) = A transposed; the state h (N,S,H): per batch row, S vectors along the channels, so each
 * step is S passes along H with no sum across lanes in the forward. Each call runs the batch rows
 * [n0, n1) of N, which never meet inside the loop: disjoint row ranges run on separate threads, and the
 * sums over rows (dA, dskip) are left per row for the caller. */

#ifndef MAMBA_C_ONCE
#define MAMBA_C_ONCE
#if defined(RNNKIT_MVEC)
#define VEC_DBC _Pragma("omp simd reduction(+ : dBs, dCs)")
#define VEC_Y _Pragma("omp simd reduction(+ : y)")
#else
#define VEC_DBC
#define VEC_Y
#endif
#define SOFTPLUS_LINEAR 20 /* softplus(x) = x above this (PyTorch's threshold) */
#endif

static inline __attribute__((always_inline)) R FN(mb_sigmoid)(R x) {
    const R e = EXP(x >= 0 ? -x : x);
    return x >= 0 ? (R)1 / ((R)1 + e) : e / ((R)1 + e);
}

/* log(1 + e^x) = max(x, 0) + log1p(e^{-|x|}): no overflow, and exact for small e^x */
static inline __attribute__((always_inline)) R FN(mb_softplus)(R x) {
    return x > (R)SOFTPLUS_LINEAR ? x : (x > 0 ? x : (R)0) + LOG1P(EXP(x >= 0 ? -x : x));
}

static inline __attribute__((always_inline)) R FN(mb_dsoftplus)(R x) {
    return x > (R)SOFTPLUS_LINEAR ? (R)1 : FN(mb_sigmoid)(x);
}

/* One step of the recurrence for one batch row: hc = exp(dt A) * hp + dt B x (S passes along H), Abar
 * written to ab (S*H). d, dx: (H,) dt and dt * xs of the step. The exponentials are taken in one flat
 * pass over all S*H values, so that only that pass's end is not a whole vector: per row of H, a width
 * that is not a multiple of the vector (E = 72) left a scalar exp call per leftover lane of every row,
 * most of the step's time. */
static inline __attribute__((always_inline)) void FN(mb_step)(long S, long H, const R *At, const R *B,
                                                              const R *d, const R *dx, const R *hp,
                                                              R *hc, R *ab) {
    for (long s = 0; s < S; s++) {
        const R *As = At + s * H;
        R *abs_ = ab + s * H;
        VEC for (long e = 0; e < H; e++) abs_[e] = d[e] * As[e];
    }
    const long SH = S * H;
    VEC for (long i = 0; i < SH; i++) ab[i] = EXP(ab[i]);
    for (long s = 0; s < S; s++) {
        const R b = B[s];
        const R *hps = hp + s * H, *abs_ = ab + s * H;
        R *hcs = hc + s * H;
        VEC for (long e = 0; e < H; e++) hcs[e] = abs_[e] * hps[e] + dx[e] * b;
    }
}

/* Forward (rnnkit/cells/mamba.py): h (N,S,H) in: the initial state, out: the final one; kept
 * (ceil(T/k),N,S,H) or NULL out: the state at steps 0, k, 2k, ... (the only states kept for backward);
 * y (T,N,H) out: C . h_t + skip xs; out (T,N,H) out: y silu(z). A padded step (mask 0) carries the
 * state, and writes y = out = 0. */
EXPORT void FN(mamba_scan_fw)(long T, long N, long H, long S, long rank, long k, long n0, long n1,
                              const R *xs, const R *pre, const R *At, const R *dbc, const R *skip,
                              const R *xz, const unsigned char *mask, R *h, R *kept, R *y, R *out,
                              void *gemm, int ilp64) {
    (void)gemm;
    (void)ilp64;
    const long W = rank + 2 * S, SH = S * H;
    R *d = malloc((2 * H + S * H) * sizeof(R)), *dx = d + H, *ab = dx + H;
    if (!d) abort(); /* a few kilobytes: there is no sensible way on */
    for (long n = n0; n < n1; n++) {
        R *hn = h + n * SH;
        for (long t = 0; t < T; t++) {
            const long tn = t * N + n;
            if (kept && t % k == 0) memcpy(kept + ((t / k) * N + n) * SH, hn, SH * sizeof(R));
            R *yt = y + tn * H, *ot = out + tn * H;
            if (mask && !mask[tn]) {
                for (long e = 0; e < H; e++) yt[e] = ot[e] = 0;
                continue;
            }
            const R *ut = xs + tn * H, *pt = pre + tn * H, *Bt = dbc + tn * W + rank, *Ct = Bt + S;
            const R *zt = xz + tn * 2 * H + H;
            VEC for (long e = 0; e < H; e++) {
                d[e] = FN(mb_softplus)(pt[e]); /* dt */
                dx[e] = d[e] * ut[e];
                yt[e] = skip[e] * ut[e];
            }
            FN(mb_step)(S, H, At, Bt, d, dx, hn, hn, ab);
            for (long s = 0; s < S; s++) { /* y += C_t[s] h_t[s, :] */
                const R c = Ct[s], *hs = hn + s * H;
                VEC for (long e = 0; e < H; e++) yt[e] += c * hs[e];
            }
            VEC for (long e = 0; e < H; e++) ot[e] = yt[e] * zt[e] * FN(mb_sigmoid)(zt[e]);
        }
    }
    free(d);
}

/* BPTT (rnnkit/cells/mamba.py's mamba_scan_bw has the equations): chunk by chunk from the last, the
 * chunk's states are recomputed from the one kept at its start (with each step's Abar), then its steps
 * run in reverse. dh (N,S,H) in: the final state's gradient, out: the initial state's; dxs, dpre
 * (T,N,H), ddbc[..., rank:] (dB | dC), dxz[..., H:] (dz) out; dA (N,S,H) and dskip (N,H) out, per row;
 * trace (T+1,N,S,H) or NULL: dL/dh_t. At a padded step nothing is written but zeros; the state's
 * gradient passes through. */
EXPORT void FN(mamba_scan_bw)(long T, long N, long H, long S, long rank, long k, long n0, long n1,
                              const R *xs, const R *pre, const R *At, const R *dbc, const R *skip,
                              const R *xz, const R *y, const unsigned char *mask, const R *kept,
                              const R *dout, R *dh, R *dxs, R *dpre, R *ddbc, R *dxz, R *dA, R *dskip,
                              R *trace, void *gemm, int ilp64) {
    (void)gemm;
    (void)ilp64;
    const long W = rank + 2 * S, SH = S * H, chunks = (T + k - 1) / k;
    /* a chunk's k+1 states and k Abar, then per step dt, dt xs, g, the channels' dxs and ddt */
    R *hb = malloc(((2 * k + 1) * SH + 5 * H) * sizeof(R));
    if (!hb) abort();
    R *ab = hb + (k + 1) * SH, *d = ab + k * SH, *dxv = d + H, *g = dxv + H, *dxa = g + H, *ddt = dxa + H;
    for (long n = n0; n < n1; n++) {
        R *lam = dh + n * SH, *dAn = dA + n * SH, *dsk = dskip + n * H;
        memset(dAn, 0, SH * sizeof(R));
        memset(dsk, 0, H * sizeof(R));
        for (long c = chunks - 1; c >= 0; c--) {
            const long t0 = c * k, t1 = t0 + k < T ? t0 + k : T;
            memcpy(hb, kept + (c * N + n) * SH, SH * sizeof(R));
            for (long t = t0; t < t1; t++) { /* the chunk's forward again */
                const long tn = t * N + n, j = t - t0;
                R *hp = hb + j * SH, *abj = ab + j * SH;
                if (mask && !mask[tn]) {
                    memcpy(hp + SH, hp, SH * sizeof(R));
                    for (long i = 0; i < SH; i++) abj[i] = 1;
                    continue;
                }
                const R *ut = xs + tn * H, *pt = pre + tn * H;
                VEC for (long e = 0; e < H; e++) {
                    d[e] = FN(mb_softplus)(pt[e]);
                    dxv[e] = d[e] * ut[e];
                }
                FN(mb_step)(S, H, At, dbc + tn * W + rank, d, dxv, hp, hp + SH, abj);
            }
            for (long t = t1 - 1; t >= t0; t--) {
                const long tn = t * N + n, j = t - t0;
                R *dxst = dxs + tn * H, *dpt = dpre + tn * H, *dzt = dxz + tn * 2 * H + H;
                R *dBt = ddbc + tn * W + rank, *dCt = dBt + S;
                R *tr = trace ? trace + ((t + 1) * N + n) * SH : NULL;
                if (mask && !mask[tn]) {
                    for (long e = 0; e < H; e++) dxst[e] = dpt[e] = dzt[e] = 0;
                    for (long s = 0; s < 2 * S; s++) dBt[s] = 0;
                    if (tr) memcpy(tr, lam, SH * sizeof(R));
                    continue;
                }
                const R *ut = xs + tn * H, *pt = pre + tn * H, *zt = xz + tn * 2 * H + H;
                const R *yt = y + tn * H, *got = dout + tn * H;
                const R *Bt = dbc + tn * W + rank, *Ct = Bt + S;
                const R *hp = hb + j * SH, *hc = hp + SH, *abj = ab + j * SH;
                VEC for (long e = 0; e < H; e++) {
                    const R z = zt[e], sz = FN(mb_sigmoid)(z);
                    g[e] = got[e] * z * sz;                                /* dL/dy */
                    dzt[e] = got[e] * yt[e] * (sz * ((R)1 + z * ((R)1 - sz))); /* through silu */
                    d[e] = FN(mb_softplus)(pt[e]);
                    dxa[e] = skip[e] * g[e];
                    ddt[e] = 0;
                    dsk[e] += g[e] * ut[e];
                }
                for (long s = 0; s < S; s++) {
                    const R b = Bt[s], cs = Ct[s];
                    const R *As = At + s * H, *hps = hp + s * H, *hcs = hc + s * H, *abs_ = abj + s * H;
                    R *ls = lam + s * H, *dAs = dAn + s * H, *trs = tr ? tr + s * H : NULL;
                    R dBs = 0, dCs = 0;
                    VEC_DBC for (long e = 0; e < H; e++) {
                        const R l = ls[e] + cs * g[e]; /* lambda_t = C_t g_t + Abar_{t+1} lambda_{t+1} */
                        if (trs) trs[e] = l;
                        dCs += g[e] * hcs[e];
                        const R ld = l * d[e], ahp = abs_[e] * hps[e];
                        dBs += ld * ut[e];
                        dxa[e] += ld * b;
                        ddt[e] += l * (b * ut[e] + As[e] * ahp);
                        dAs[e] += ld * ahp;
                        ls[e] = abs_[e] * l; /* to h_{t-1} */
                    }
                    dBt[s] = dBs;
                    dCt[s] = dCs;
                }
                VEC for (long e = 0; e < H; e++) {
                    dxst[e] = dxa[e];
                    dpt[e] = ddt[e] * FN(mb_dsoftplus)(pt[e]);
                }
            }
        }
        if (trace) memcpy(trace + n * SH, lam, SH * sizeof(R));
    }
    free(hb);
}

/* xi at step tau of row n: the conv state's before the sequence (tau < 0), else xz's first half. */
static inline const R *FN(mb_tap)(long tau, long n, long N, long H, long K, const R *xz,
                                  const R *conv0) {
    return tau < 0 ? conv0 + (n * (K - 1) + K - 1 + tau) * H : xz + (tau * N + n) * 2 * H;
}

/* c (H,) = b + sum_j w[j] xi_{t-K+1+j}: the convolution's output at step t of row n. */
static inline void FN(mb_conv_at)(long t, long n, long N, long H, long K, const R *xz,
                                  const R *conv0, const R *w, const R *b, R *c) {
    for (long e = 0; e < H; e++) c[e] = b[e];
    for (long j = 0; j < K; j++) {
        const R *src = FN(mb_tap)(t - K + 1 + j, n, N, H, K, xz, conv0), *wj = w + j * H;
        VEC for (long e = 0; e < H; e++) c[e] += wj[e] * src[e];
    }
}

/* The causal depthwise convolution and its SiLU (rnnkit/functional/causal_conv.py is the reference's):
 * xz (T,N,2H), xi its first half; conv0 (N,K-1,H) the K-1 inputs before the sequence; w (K,H), b (H);
 * xs (T,N,H) out: silu(b + sum_j w[j] xi_{t-K+1+j}). */
EXPORT void FN(mamba_conv_fw)(long T, long N, long H, long K, long n0, long n1, const R *xz,
                              const R *conv0, const R *w, const R *b, R *xs, void *gemm, int ilp64) {
    (void)gemm;
    (void)ilp64;
    for (long n = n0; n < n1; n++)
        for (long t = 0; t < T; t++) {
            R *o = xs + (t * N + n) * H;
            FN(mb_conv_at)(t, n, N, H, K, xz, conv0, w, b, o);
            VEC for (long e = 0; e < H; e++) o[e] = o[e] * FN(mb_sigmoid)(o[e]);
        }
}

/* Its backward: dxs (T,N,H) in: the gradient of xs, out: of the convolution's output (through the
 * SiLU, recomputed here rather than kept); dxz[..., :H] out: dxi; dconv0 (N,K-1,H) out; dw (N,K,H) and
 * db (N,H) out, per batch row. The final state's gradient is the caller's to add. */
EXPORT void FN(mamba_conv_bw)(long T, long N, long H, long K, long n0, long n1, const R *xz,
                              const R *conv0, const R *w, const R *b, R *dxs, R *dxz, R *dconv0,
                              R *dw, R *db, void *gemm, int ilp64) {
    (void)gemm;
    (void)ilp64;
    R *c = malloc(H * sizeof(R));
    if (!c) abort();
    for (long n = n0; n < n1; n++) {
        R *dwn = dw + n * K * H, *dbn = db + n * H;
        memset(dwn, 0, K * H * sizeof(R));
        memset(dbn, 0, H * sizeof(R));
        for (long t = 0; t < T; t++) { /* dxc = dxs silu'(xc), and the taps' gradients */
            R *g = dxs + (t * N + n) * H;
            FN(mb_conv_at)(t, n, N, H, K, xz, conv0, w, b, c);
            VEC for (long e = 0; e < H; e++) {
                const R s = FN(mb_sigmoid)(c[e]);
                g[e] *= s * ((R)1 + c[e] * ((R)1 - s));
                dbn[e] += g[e];
            }
            for (long j = 0; j < K; j++) {
                const R *src = FN(mb_tap)(t - K + 1 + j, n, N, H, K, xz, conv0);
                R *dwj = dwn + j * H;
                VEC for (long e = 0; e < H; e++) dwj[e] += g[e] * src[e];
            }
        }
        for (long tau = -(K - 1); tau < T; tau++) { /* dxi_tau = sum_j w[j] dxc_{tau+K-1-j} */
            R *dst = tau < 0 ? dconv0 + (n * (K - 1) + K - 1 + tau) * H : dxz + (tau * N + n) * 2 * H;
            for (long e = 0; e < H; e++) dst[e] = 0;
            for (long j = 0; j < K; j++) {
                const long t = tau + K - 1 - j;
                if (t < 0 || t >= T) continue;
                const R *g = dxs + (t * N + n) * H, *wj = w + j * H;
                VEC for (long e = 0; e < H; e++) dst[e] += wj[e] * g[e];
            }
        }
    }
    free(c);
}

/* One token of the whole block, for generation (rnnkit/cells/mamba.py's mamba_step is the reference):
 * x (N,D) -> out (N,H); conv (N,K-1,E) and ssm (N,E,S) updated in place (the caller passes copies).
 * Here the SSM state keeps PyTorch's (N,E,S) layout: one step reads it once, along S. The products run
 * through the BLAS for the rows [n0, n1) at once (a gemv at one row). */
EXPORT void FN(mamba_step)(long T, long N, long H, long D, long E, long S, long rank, long K, long n0,
                           long n1, const R *x, const R *norm, const R *W_in, const R *conv_w,
                           const R *conv_b, const R *W_x, const R *W_dt, const R *b_dt, const R *A_log,
                           const R *skip, const R *W_out, R *conv, R *ssm, R *out, void *gemm,
                           int ilp64) {
    (void)T;
    const long M = n1 - n0, W = rank + 2 * S;
    R *u = malloc((M * D + M * 2 * E + 3 * M * E + M * W) * sizeof(R));
    if (!u) abort();
    R *xz = u + M * D, *xs = xz + M * 2 * E, *pre = xs + M * E, *o = pre + M * E, *dbc = o + M * E;
    for (long r = 0; r < M; r++) { /* u = x / rms(x) * norm */
        const R *xr = x + (n0 + r) * D;
        R ss = 0;
        for (long i = 0; i < D; i++) ss += xr[i] * xr[i];
        const R inv = (R)1 / SQRT(ss / (R)D + (R)1e-5);
        for (long i = 0; i < D; i++) u[r * D + i] = xr[i] * inv * norm[i];
    }
    GEMM(gemm, ilp64, NULL, M, 2 * E, D, u, D, W_in, 2 * E, (R)0, xz, 2 * E);
    for (long r = 0; r < M; r++) { /* the convolution over [conv | xi], then the window moves on */
        R *cs = conv + (n0 + r) * (K - 1) * E, *xi = xz + r * 2 * E, *c = xs + r * E;
        const R *wl = conv_w + (K - 1) * E;
        VEC for (long e = 0; e < E; e++) c[e] = conv_b[e] + wl[e] * xi[e];
        for (long j = 0; j < K - 1; j++) {
            const R *wj = conv_w + j * E, *sj = cs + j * E;
            VEC for (long e = 0; e < E; e++) c[e] += wj[e] * sj[e];
        }
        VEC for (long e = 0; e < E; e++) c[e] = c[e] * FN(mb_sigmoid)(c[e]);
        if (K > 1) {
            memmove(cs, cs + E, (K - 2) * E * sizeof(R));
            memcpy(cs + (K - 2) * E, xi, E * sizeof(R));
        }
    }
    GEMM(gemm, ilp64, NULL, M, W, E, xs, E, W_x, W, (R)0, dbc, W);
    GEMM(gemm, ilp64, NULL, M, E, rank, dbc, W, W_dt, E, (R)0, pre, E);
    /* A = -exp(A_log) once for all rows; then per row, the channels' dt, dt xs and silu(z) in passes
     * along E, the state's update along each channel's S entries (PyTorch's layout), the output gated */
    R *An = malloc((2 * E * S + 3 * E) * sizeof(R));
    if (!An) abort();
    R *ab = An + E * S, *dv = ab + E * S, *dxv = dv + E, *gz = dxv + E;
    VEC for (long i = 0; i < E * S; i++) An[i] = -EXP(A_log[i]);
    for (long r = 0; r < M; r++) { /* h = exp(dt A) h + dt B xs; y = C . h + skip xs; o = y silu(z) */
        const R *B = dbc + r * W + rank, *C = B + S, *z = xz + r * 2 * E + E, *xr = xs + r * E;
        R *h = ssm + (n0 + r) * E * S, *pr = pre + r * E, *orow = o + r * E;
        VEC for (long e = 0; e < E; e++) {
            dv[e] = FN(mb_softplus)(pr[e] + b_dt[e]);
            dxv[e] = dv[e] * xr[e];
            gz[e] = z[e] * FN(mb_sigmoid)(z[e]);
        }
        for (long e = 0; e < E; e++) { /* dt A, then its exponentials in one flat pass */
            const R d = dv[e], *Ae = An + e * S;
            R *abe = ab + e * S;
            VEC for (long s = 0; s < S; s++) abe[s] = d * Ae[s];
        }
        VEC for (long i = 0; i < E * S; i++) ab[i] = EXP(ab[i]);
        for (long e = 0; e < E; e++) {
            const R dx = dxv[e], *abe = ab + e * S;
            R *he = h + e * S, y = 0;
            VEC_Y for (long s = 0; s < S; s++) {
                he[s] = abe[s] * he[s] + dx * B[s];
                y += C[s] * he[s];
            }
            orow[e] = y;
        }
        VEC for (long e = 0; e < E; e++) orow[e] = (orow[e] + skip[e] * xr[e]) * gz[e];
    }
    free(An);
    GEMM(gemm, ilp64, NULL, M, H, E, o, E, W_out, H, (R)0, out + n0 * H, H);
    if (D == H)
        for (long r = 0; r < M; r++)
            for (long i = 0; i < H; i++) out[(n0 + r) * H + i] += x[(n0 + r) * D + i];
    free(u);
}
