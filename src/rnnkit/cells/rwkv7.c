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
#else
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
    for (long i = 0; i < H; i++) {
        const R *p = Sp + i * H;
        R *c = Sc + i * H;
        R acc = 0;
        VEC_ACC for (long j = 0; j < H; j++) acc += p[j] * a[j]; /* sa_i = S_{t-1,i} . a */
        const R sai = acc, vi = v[i];
        if (sa) sa[i] = sai;
        if (y) {
            acc = 0;
            VEC_ACC for (long j = 0; j < H; j++) {
                const R s = p[j] * w[j] + sai * b[j] + vi * k[j];
                c[j] = s;
                acc += s * r[j]; /* y_i = S_{t,i} . r */
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
