/* RWKV-7's WKV recurrence, forward and BPTT. Compiled through rnnkit/kernels/instantiate.c, once for
 * float and once for double (R, FN: rnnkit/kernels/rnnkit_kernels.h). Each function mirrors the NumPy
 * reference of the same name and arguments in rnnkit/cells/rwkv7.py (same buffers, same masking rules);
 * the reference is the specification and tests/test_rwkv7_wkv.py checks the two agree.
 *
 * The loops run over streams, one head of one batch row each: N here is the stream count (the batch
 * times the heads) and H the head size. Layouts are row-major and contiguous: r, w, k, v, a, b, y
 * (T,N,H); the state S (N,H,H), value index i by key index j, so that a step is one pass along each
 * row: sa_i = S_i . a, then S_ij = S_ij w_j + sa_i b_j + v_i k_j and y_i = S_i . r. Each call runs the
 * streams [n0, n1) of N, which never meet: disjoint ranges run on separate threads. */

#ifndef RWKV7_C_ONCE
#define RWKV7_C_ONCE
#if defined(RNNKIT_MVEC)
#define VEC_ACC _Pragma("omp simd reduction(+ : acc)")
#define VEC_ACC2 _Pragma("omp simd reduction(+ : acc, acc2)")
#define VEC_ACC4(x0, x1, x2, x3) _Pragma(RWKV7_STR(omp simd reduction(+ : x0, x1, x2, x3)))
#define RWKV7_STR(x) #x
#else
#define VEC_ACC4(x0, x1, x2, x3)
#define VEC_ACC
#define VEC_ACC2
#endif
#endif

/* One step of one stream: Sp (H,H) the state before, Sc after (Sc == Sp: in place, since row i reads
 * only row i, after its sa); sa (H,) or NULL out: S_{t-1} a, which the backward reads; y (H,) or NULL
 * out: S_t r. The forward and the backward's recompute both take this step, so the recomputed states
 * are the forward's own arithmetic. */
static inline __attribute__((always_inline)) void FN(wkv7_step)(long H, const R *Sp, R *Sc,
                                                                const R *w, const R *k, const R *v,
                                                                const R *a, const R *b, const R *r,
                                                                R *sa, R *y) {
    long i = 0;
    /* Four rows at once: a row's dot products are too short (H = 64) to hide their sums' latency and
     * the loop's overhead alone; four share them, and the loads of a, w, b, k and r. */
    for (; i + 4 <= H; i += 4) {
        const R *p0 = Sp + i * H, *p1 = p0 + H, *p2 = p1 + H, *p3 = p2 + H;
        R *c0 = Sc + i * H, *c1 = c0 + H, *c2 = c1 + H, *c3 = c2 + H;
        R s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        VEC_ACC4(s0, s1, s2, s3) for (long j = 0; j < H; j++) { /* sa_i = S_{t-1,i} . a */
            s0 += p0[j] * a[j];
            s1 += p1[j] * a[j];
            s2 += p2[j] * a[j];
            s3 += p3[j] * a[j];
        }
        const R v0 = v[i], v1 = v[i + 1], v2 = v[i + 2], v3 = v[i + 3];
        if (sa) sa[i] = s0, sa[i + 1] = s1, sa[i + 2] = s2, sa[i + 3] = s3;
        if (y) {
            R y0 = 0, y1 = 0, y2 = 0, y3 = 0;
            VEC_ACC4(y0, y1, y2, y3) for (long j = 0; j < H; j++) { /* y_i = S_{t,i} . r */
                const R e0 = p0[j] * w[j] + s0 * b[j] + v0 * k[j];
                const R e1 = p1[j] * w[j] + s1 * b[j] + v1 * k[j];
                const R e2 = p2[j] * w[j] + s2 * b[j] + v2 * k[j];
                const R e3 = p3[j] * w[j] + s3 * b[j] + v3 * k[j];
                c0[j] = e0, c1[j] = e1, c2[j] = e2, c3[j] = e3;
                y0 += e0 * r[j], y1 += e1 * r[j], y2 += e2 * r[j], y3 += e3 * r[j];
            }
            y[i] = y0, y[i + 1] = y1, y[i + 2] = y2, y[i + 3] = y3;
        } else {
            VEC for (long j = 0; j < H; j++) {
                c0[j] = p0[j] * w[j] + s0 * b[j] + v0 * k[j];
                c1[j] = p1[j] * w[j] + s1 * b[j] + v1 * k[j];
                c2[j] = p2[j] * w[j] + s2 * b[j] + v2 * k[j];
                c3[j] = p3[j] * w[j] + s3 * b[j] + v3 * k[j];
            }
        }
    }
    for (; i < H; i++) {
        const R *p = Sp + i * H;
        R *c = Sc + i * H;
        R acc = 0;
        VEC_ACC for (long j = 0; j < H; j++) acc += p[j] * a[j];
        const R sai = acc, vi = v[i];
        if (sa) sa[i] = sai;
        if (y) {
            acc = 0;
            VEC_ACC for (long j = 0; j < H; j++) {
                const R e = p[j] * w[j] + sai * b[j] + vi * k[j];
                c[j] = e;
                acc += e * r[j];
            }
            y[i] = acc;
        } else {
            VEC for (long j = 0; j < H; j++) c[j] = p[j] * w[j] + sai * b[j] + vi * k[j];
        }
    }
}

/* Forward (rnnkit/cells/rwkv7.py): S (N,H,H) in: the initial state, out: the final one; kept
 * (ceil(T/chunk),N,H,H) or NULL out: the state before steps 0, chunk, 2 chunk, ... (the only states kept
 * for backward); y (T,N,H) out. A padded step (mask 0) carries the state and writes y = 0. */
EXPORT void FN(wkv7_fw)(long T, long N, long H, long chunk, long n0, long n1, const R *r,
                        const R *w, const R *k, const R *v, const R *a, const R *b,
                        const unsigned char *mask, R *S, R *kept, R *y, void *gemm, int ilp64) {
    (void)gemm;
    (void)ilp64;
    const long HH = H * H;
    for (long n = n0; n < n1; n++) {
        R *Sn = S + n * HH;
        for (long t = 0; t < T; t++) {
            const long tn = (t * N + n) * H;
            if (kept && t % chunk == 0) memcpy(kept + ((t / chunk) * N + n) * HH, Sn, HH * sizeof(R));
            if (mask && !mask[t * N + n]) {
                for (long i = 0; i < H; i++) y[tn + i] = 0;
                continue;
            }
            FN(wkv7_step)(H, Sn, Sn, w + tn, k + tn, v + tn, a + tn, b + tn, r + tn, NULL, y + tn);
        }
    }
}

/* BPTT (rnnkit/cells/rwkv7.py's wkv7_bw has the equations): chunk by chunk from the last, the chunk's
 * states (and each step's sa) are recomputed from the one kept at its start, then its steps run in
 * reverse. dS (N,H,H) in: the final state's gradient, out: the initial state's; it holds L_t, the
 * gradient of S_t from the steps after t, and becomes G_t = L_t + dy_t r^T, then L_{t-1}, in place.
 * dr, dw, dk, dv, da, db (T,N,H) out, 0 at a padded step, where L passes unchanged. */
EXPORT void FN(wkv7_bw)(long T, long N, long H, long chunk, long n0, long n1, const R *r,
                        const R *w, const R *k, const R *v, const R *a, const R *b,
                        const unsigned char *mask, const R *kept, const R *dy, R *dS, R *dr, R *dw,
                        R *dk, R *dv, R *da, R *db, void *gemm, int ilp64) {
    (void)gemm;
    (void)ilp64;
    const long HH = H * H, K = chunk < T ? chunk : T, chunks = (T + chunk - 1) / chunk;
    R *hb = malloc(((K + 1) * HH + K * H) * sizeof(R)); /* a chunk's K+1 states, then its sa */
    if (!hb) abort(); /* at most (T+1) H^2 values: there is no sensible way on */
    R *sab = hb + (K + 1) * HH;
    for (long n = n0; n < n1; n++) {
        R *L = dS + n * HH;
        for (long c = chunks - 1; c >= 0; c--) {
            const long t0 = c * chunk, t1 = t0 + chunk < T ? t0 + chunk : T;
            memcpy(hb, kept + (c * N + n) * HH, HH * sizeof(R));
            for (long t = t0; t < t1; t++) { /* the chunk's forward again */
                const long tn = (t * N + n) * H, j = t - t0;
                R *hp = hb + j * HH;
                if (mask && !mask[t * N + n]) {
                    memcpy(hp + HH, hp, HH * sizeof(R));
                    continue;
                }
                FN(wkv7_step)(H, hp, hp + HH, w + tn, k + tn, v + tn, a + tn, b + tn, NULL,
                              sab + j * H, NULL);
            }
            for (long t = t1 - 1; t >= t0; t--) {
                const long tn = (t * N + n) * H, jt = t - t0;
                R *drt = dr + tn, *dwt = dw + tn, *dkt = dk + tn, *dvt = dv + tn, *dat = da + tn,
                  *dbt = db + tn;
                for (long j = 0; j < H; j++) drt[j] = dwt[j] = dkt[j] = dvt[j] = dat[j] = dbt[j] = 0;
                if (mask && !mask[t * N + n]) continue;
                const R *rt = r + tn, *wt = w + tn, *kt = k + tn, *vt = v + tn, *at = a + tn,
                        *bt = b + tn, *dyt = dy + tn, *sa = sab + jt * H;
                const R *Sp = hb + jt * HH, *Sc = Sp + HH;
                for (long i = 0; i < H; i++) {
                    const R *p = Sp + i * H, *s = Sc + i * H;
                    R *l = L + i * H;
                    const R dyi = dyt[i], vi = vt[i], sai = sa[i];
                    R acc = 0, acc2 = 0;
                    VEC_ACC2 for (long j = 0; j < H; j++) {
                        const R g = l[j] + dyi * rt[j]; /* G_t = L_t + dy_t r_t^T */
                        l[j] = g;
                        acc += g * kt[j];               /* dv_i = G_i . k */
                        acc2 += g * bt[j];              /* dsa_i = G_i . b */
                        drt[j] += dyi * s[j];           /* dr = S_t^T dy */
                        dwt[j] += g * p[j];             /* dw_j = sum_i G_ij S_{t-1,ij} */
                        dkt[j] += g * vi;               /* dk = G^T v */
                        dbt[j] += g * sai;              /* db = G^T sa */
                    }
                    dvt[i] = acc;
                    const R dsai = acc2;
                    VEC for (long j = 0; j < H; j++) {
                        dat[j] += dsai * p[j];                  /* da = S_{t-1}^T dsa */
                        l[j] = l[j] * wt[j] + dsai * at[j];     /* L_{t-1} = G diag(w) + dsa a^T */
                    }
                }
            }
        }
    }
    free(hb);
}

/* --- one token of the whole block, for generation ------------------------------------------------- */

static inline __attribute__((always_inline)) R FN(rk_sigmoid)(R x) {
    const R e = EXP(x >= 0 ? -x : x);
    return x >= 0 ? (R)1 / ((R)1 + e) : e / ((R)1 + e);
}

/* LayerNorm of each of `rows` rows of width M: out = (x - mean) / sqrt(var + eps) * w + b */
static void FN(rk_layer_norm)(long rows, long M, const R *x, const R *w, const R *b, R eps, R *out) {
    for (long r = 0; r < rows; r++) {
        const R *xr = x + r * M;
        R *o = out + r * M, mean = 0, var = 0;
        for (long i = 0; i < M; i++) mean += xr[i];
        mean /= (R)M;
        for (long i = 0; i < M; i++) var += (xr[i] - mean) * (xr[i] - mean);
        const R inv = (R)1 / SQRT(var / (R)M + eps);
        VEC for (long i = 0; i < M; i++) o[i] = (xr[i] - mean) * inv * w[i] + b[i];
    }
}

/* One token through the block (rnnkit/cells/rwkv7.py's rwkv7_step_fw is the reference), rows
 * [n0, n1) of N: x (N,D) -> out (N,H) with H the width; the state tshift, cshift (N,H) and wkv
 * (N,NH,C,C) moved on one step in place (the caller passes copies); vfirst (N,H): written (first = 1,
 * the stack's first layer: its values) or read (a later layer's value residual). W_in is NULL where
 * D = H. The products run through the BLAS for all rows at once (a gemv at one row); everything else
 * in passes along the channels, the WKV step as the sequence loop's. */
EXPORT void FN(rwkv7_step)(long T, long N, long H, long D, long NH, long C, long Rw, long Ra, long Rv,
                           long Rg, long first, long n0, long n1, const R *x, const R *W_in,
                           const R *ln1_w, const R *ln1_b, const R *mu_r, const R *mu_w,
                           const R *mu_k, const R *mu_v, const R *mu_a, const R *mu_g, const R *Wr,
                           const R *Wk, const R *Wv, const R *w0, const R *w1, const R *w2,
                           const R *a0, const R *a1, const R *a2, const R *v0, const R *v1,
                           const R *v2, const R *g1, const R *g2, const R *k_k, const R *k_a,
                           const R *r_k, const R *lnx_w, const R *lnx_b, const R *Wo,
                           const R *ln2_w, const R *ln2_b, const R *mu_c, const R *Wck,
                           const R *Wcv, R *tshift, R *wkv, R *cshift, R *vfirst, R *out, void *gemm,
                           int ilp64) {
    (void)T;
    (void)N;
    const long M = n1 - n0, F = 4 * H, Rm = Rw + Ra + Rv + Rg;
    R *buf = malloc((M * (18 * H + F + Rm)) * sizeof(R));
    if (!buf) abort();
    R *x0 = buf, *u = x0 + M * H, *X = u + M * H; /* X: the six mixes x_r .. x_g, each (M,H) */
    R *r = X + 6 * M * H, *k = r + M * H, *v = k + M * H, *w = v + M * H, *a = w + M * H;
    R *g = a + M * H, *y = g + M * H, *x1 = y + M * H, *xc = x1 + M * H, *tmp = xc + M * H;
    R *kc = tmp + M * H, *lo = kc + M * F; /* lo: the LoRAs' low-rank middles */
    R *hw = lo, *ha = hw + M * Rw, *hv = ha + M * Ra, *hg = hv + M * Rv;
    const R *xin = x + n0 * D;
    if (W_in)
        GEMM(gemm, ilp64, NULL, M, H, D, xin, D, W_in, H, (R)0, x0, H);
    else
        memcpy(x0, xin, M * H * sizeof(R));
    FN(rk_layer_norm)(M, H, x0, ln1_w, ln1_b, (R)1e-5, u);
    const R *mus[6] = {mu_r, mu_w, mu_k, mu_v, mu_a, mu_g};
    for (long q = 0; q < M; q++) { /* x_* = u + (u_{t-1} - u) mu_*; then the shift state is u */
        R *ts = tshift + (n0 + q) * H;
        const R *uq = u + q * H;
        for (long m = 0; m < 6; m++) {
            R *Xm = X + (m * M + q) * H;
            VEC for (long i = 0; i < H; i++) Xm[i] = uq[i] + (ts[i] - uq[i]) * mus[m][i];
        }
        memcpy(ts, uq, H * sizeof(R));
    }
    const R *xr = X, *xw = X + M * H, *xk = X + 2 * M * H, *xv = X + 3 * M * H, *xa = X + 4 * M * H;
    const R *xg = X + 5 * M * H;
    GEMM(gemm, ilp64, NULL, M, H, H, xr, H, Wr, H, (R)0, r, H);
    GEMM(gemm, ilp64, NULL, M, H, H, xk, H, Wk, H, (R)0, k, H);
    GEMM(gemm, ilp64, NULL, M, H, H, xv, H, Wv, H, (R)0, v, H);
    /* w = exp(-e^-0.5 sigmoid(w0 + tanh(x_w w1) w2)) */
    GEMM(gemm, ilp64, NULL, M, Rw, H, xw, H, w1, Rw, (R)0, hw, Rw);
    VEC for (long i = 0; i < M * Rw; i++) hw[i] = TANH(hw[i]);
    GEMM(gemm, ilp64, NULL, M, H, Rw, hw, Rw, w2, H, (R)0, w, H);
    const R decay = (R)0.6065306597126334; /* e^-0.5 */
    for (long q = 0; q < M; q++) {
        R *wq = w + q * H;
        VEC for (long i = 0; i < H; i++) wq[i] = EXP(-decay * FN(rk_sigmoid)(w0[i] + wq[i]));
    }
    /* the value residual: v <- v + (v_first - v) sigmoid(v0 + x_v v1 v2); the first layer's v is it */
    if (first) {
        for (long q = 0; q < M; q++) memcpy(vfirst + (n0 + q) * H, v + q * H, H * sizeof(R));
    } else {
        GEMM(gemm, ilp64, NULL, M, Rv, H, xv, H, v1, Rv, (R)0, hv, Rv);
        GEMM(gemm, ilp64, NULL, M, H, Rv, hv, Rv, v2, H, (R)0, tmp, H);
        for (long q = 0; q < M; q++) {
            R *vq = v + q * H;
            const R *vf = vfirst + (n0 + q) * H, *tq = tmp + q * H;
            VEC for (long i = 0; i < H; i++) vq[i] += (vf[i] - vq[i]) * FN(rk_sigmoid)(v0[i] + tq[i]);
        }
    }
    /* a = sigmoid(a0 + x_a a1 a2); g = sigmoid(x_g g1) g2 */
    GEMM(gemm, ilp64, NULL, M, Ra, H, xa, H, a1, Ra, (R)0, ha, Ra);
    GEMM(gemm, ilp64, NULL, M, H, Ra, ha, Ra, a2, H, (R)0, a, H);
    for (long q = 0; q < M; q++) {
        R *aq = a + q * H;
        VEC for (long i = 0; i < H; i++) aq[i] = FN(rk_sigmoid)(a0[i] + aq[i]);
    }
    GEMM(gemm, ilp64, NULL, M, Rg, H, xg, H, g1, Rg, (R)0, hg, Rg);
    VEC for (long i = 0; i < M * Rg; i++) hg[i] = FN(rk_sigmoid)(hg[i]);
    GEMM(gemm, ilp64, NULL, M, H, Rg, hg, Rg, g2, H, (R)0, g, H);
    R *kk = tmp, *bb = x1, *aa = xc; /* scratch until the time mix's output: kk, kk a, -kk */
    for (long q = 0; q < M; q++) {
        R *kq = k + q * H, *aq = a + q * H, *kkq = kk + q * H, *bq = bb + q * H, *naq = aa + q * H;
        for (long h = 0; h < NH; h++) { /* kk = normalize_head(k k_k), the norm floored at 1e-12 */
            R ss = 0;
            for (long c = 0; c < C; c++) {
                const R z = kq[h * C + c] * k_k[h * C + c];
                kkq[h * C + c] = z;
                ss += z * z;
            }
            R nrm = SQRT(ss);
            nrm = nrm > (R)1e-12 ? nrm : (R)1e-12;
            for (long c = 0; c < C; c++) kkq[h * C + c] /= nrm;
        }
        VEC for (long i = 0; i < H; i++) {
            bq[i] = kkq[i] * aq[i];
            naq[i] = -kkq[i];
            kq[i] *= (R)1 + (aq[i] - (R)1) * k_a[i]; /* kt = k (1 + (a - 1) k_a) */
        }
        for (long h = 0; h < NH; h++) { /* the WKV step of each head, then its group norm */
            R *S = wkv + ((n0 + q) * NH + h) * C * C, *yh = y + q * H + h * C;
            const long o = h * C;
            FN(wkv7_step)(C, S, S, w + q * H + o, kq + o, v + q * H + o, naq + o, bq + o,
                          r + q * H + o, NULL, yh);
            R mean = 0, var = 0, rk = 0;
            for (long c = 0; c < C; c++) mean += yh[c];
            mean /= (R)C;
            for (long c = 0; c < C; c++) var += (yh[c] - mean) * (yh[c] - mean);
            const R inv = (R)1 / SQRT(var / (R)C + (R)64e-5);
            for (long c = 0; c < C; c++) rk += r[q * H + o + c] * kq[o + c] * r_k[o + c];
            for (long c = 0; c < C; c++) /* (GroupNorm(y) + (sum r kt r_k) v) g */
                yh[c] = (((yh[c] - mean) * inv * lnx_w[o + c] + lnx_b[o + c]) + rk * v[q * H + o + c])
                        * g[q * H + o + c];
        }
    }
    memcpy(x1, x0, M * H * sizeof(R)); /* x1 = x0 + o Wo */
    GEMM(gemm, ilp64, NULL, M, H, H, y, H, Wo, H, (R)1, x1, H);
    FN(rk_layer_norm)(M, H, x1, ln2_w, ln2_b, (R)1e-5, u);
    for (long q = 0; q < M; q++) { /* the channel mix's shift: xc = u2 + (u2_{t-1} - u2) mu_c */
        R *cs = cshift + (n0 + q) * H, *xq = xc + q * H;
        const R *uq = u + q * H;
        VEC for (long i = 0; i < H; i++) xq[i] = uq[i] + (cs[i] - uq[i]) * mu_c[i];
        memcpy(cs, uq, H * sizeof(R));
    }
    GEMM(gemm, ilp64, NULL, M, F, H, xc, H, Wck, F, (R)0, kc, F);
    VEC for (long i = 0; i < M * F; i++) kc[i] = kc[i] > 0 ? kc[i] * kc[i] : (R)0; /* relu^2 */
    R *oq = out + n0 * H;
    memcpy(oq, x1, M * H * sizeof(R));
    GEMM(gemm, ilp64, NULL, M, H, F, kc, F, Wcv, H, (R)1, oq, H);
    free(buf);
}
