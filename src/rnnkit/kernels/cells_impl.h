/* The time loops of the LSTM, GRU and RNN forward and BPTT, for one real type R (float or double).
 *
 * Included twice by cells.c with R / SFX / GEMM defined. Each function mirrors, line for line, the plain
 * NumPy reference in rnnkit/functional/{lstm,gru,rnn}.py (same buffers, same names, same masking rules);
 * the reference is the specification and tests/test_fast_kernels.py checks the two agree.
 * The one matrix product per step goes to the BLAS that NumPy itself uses (a function pointer found at
 * load time), so the only thing this file adds is doing the element-wise work of a step in one pass.
 *
 * Layouts are row-major and contiguous; x-side pre-activations hold x_t Wx, and + b where a kernel
 * takes no b of its own.
 * Each call runs the batch rows [n0, n1) of N: the rows of a batch never meet inside the time loop, so
 * disjoint row ranges run on separate threads with no synchronisation (rnnkit/kernels/__init__.py).
 */

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, SFX)

/* sigmoid(a) = 0.5 tanh(0.5 a) + 0.5: never overflows, same formula as the reference. */
#define SIGM(v) ((R)0.5 * TANH((R)0.5 * (v)) + (R)0.5)

/* One LSTM step's element-wise work on one batch row: an (4H) the pre-activations [i,f,o,g] without the
 * bias in, their activations out; b (4H) the bias, added here where the row is in cache (NULL: already
 * in an); cn = f c_{t-1} + i g, tcn = tanh(cn), and hn = o tanh(cn) unless hn is NULL (a rebuild from
 * known hidden states, lstm_cells). A padded step (pad) carries c_{t-1} (and h_{t-1}). */
static inline void FN(lstm_cell)(long H, R *an, const R *b, const R *cpn, R *cnn, R *tcn, const R *hpn,
                                 R *hnn, int pad) {
    /* the bias in the activations' own pass (the compiler lifts the test on b out of the loops) */
    VEC for (long j = 0; j < 3 * H; j++) an[j] = SIGM(an[j] + (b ? b[j] : (R)0));   /* i, f, o */
    VEC for (long j = 3 * H; j < 4 * H; j++) an[j] = TANH(an[j] + (b ? b[j] : (R)0));   /* g */
    const R *i = an, *f = an + H, *o = an + 2 * H, *g = an + 3 * H;
    VEC for (long j = 0; j < H; j++) cnn[j] = f[j] * cpn[j] + i[j] * g[j];
    VEC for (long j = 0; j < H; j++) tcn[j] = TANH(cnn[j]);
    if (hnn) {
        VEC for (long j = 0; j < H; j++) hnn[j] = o[j] * tcn[j];
    }
    if (pad) {
        for (long j = 0; j < H; j++) cnn[j] = cpn[j];
        if (hnn)
            for (long j = 0; j < H; j++) hnn[j] = hpn[j];
    }
}

/* LSTM forward. gates (T,N,4H) [i,f,o,g] x-side pre-activations x_t Wx in, activations out; h, c
 * (T+1,N,H) with h[0], c[0] set; tanh_c (T,N,H); Wh (H,4H); b (4H) or NULL when gates hold it already;
 * mask (T,N) bytes or NULL. */
EXPORT void FN(lstm_fw)(long T, long N, long H, long n0, long n1, R *gates, R *h, R *c, R *tanh_c,
                        const R *Wh, const R *b, const unsigned char *mask, void *gemm, int ilp64) {
    const long G = 4 * H, NH = N * H;
    R *P = PACK(ilp64, n1 - n0, Wh, H, G);
    for (long t = 0; t < T; t++) {
        R *a = gates + t * N * G;
        const R *hp = h + t * NH, *cp = c + t * NH;
        R *hn = h + (t + 1) * NH, *cn = c + (t + 1) * NH, *tc = tanh_c + t * NH;
        /* a += h_{t-1} Wh */
        GEMM(gemm, ilp64, P, n1 - n0, G, H, hp + n0 * H, H, Wh, G, (R)1, a + n0 * G, G);
        for (long n = n0; n < n1; n++)
            FN(lstm_cell)(H, a + n * G, b, cp + n * H, cn + n * H, tc + n * H, hp + n * H, hn + n * H,
                          mask && !mask[t * N + n]);
    }
    free(P);
}

/* The element-wise part of lstm_fw alone, for the cache rebuilt from hidden states the forward already
 * produced (lstm_recompute): gates (T,N,4H) hold the pre-activations x_t Wx + h_{t-1} Wh on entry (b,
 * (4H), is added here), activations on return; c (T+1,N,H) with c[0] set; tanh_c (T,N,H). No product,
 * no h written. */
EXPORT void FN(lstm_cells)(long T, long N, long H, long n0, long n1, R *gates, R *c, R *tanh_c,
                           const R *b, const unsigned char *mask, void *gemm, int ilp64) {
    (void)gemm;
    (void)ilp64;
    const long G = 4 * H, NH = N * H;
    for (long t = 0; t < T; t++)
        for (long n = n0; n < n1; n++)
            FN(lstm_cell)(H, gates + (t * N + n) * G, b, c + t * NH + n * H, c + (t + 1) * NH + n * H,
                          tanh_c + t * NH + n * H, NULL, NULL, mask && !mask[t * N + n]);
}

/* LSTM BPTT. dh (T,N,H); dh_next, dc_next (N,H) in: gradient of the final state, out: of the initial;
 * da (T,N,4H) out; WhT (4H,H) contiguous; dht (N,H) scratch; trace_dh, trace_dc (T+1,N,H) or NULL. */
EXPORT void FN(lstm_bw)(long T, long N, long H, long n0, long n1, const R *dh, const R *gates,
                        const R *c,
                        const R *tanh_c, const R *WhT, const unsigned char *mask, R *dh_next,
                        R *dc_next, R *da, R *dht, R *trace_dh, R *trace_dc, void *gemm, int ilp64) {
    const long G = 4 * H, NH = N * H;
    R *P = PACK(ilp64, n1 - n0, WhT, G, H);
    for (long t = T - 1; t >= 0; t--) {
        const R *a = gates + t * N * G, *cp = c + t * NH, *tc = tanh_c + t * NH, *dhs = dh + t * NH;
        R *dat = da + t * N * G;
        for (long n = n0; n < n1; n++) {
            const int m = mask ? mask[t * N + n] != 0 : 1;
            const R *an = a + n * G, *cpn = cp + n * H, *tcn = tc + n * H, *dhn = dhs + n * H;
            const R *i = an, *f = an + H, *o = an + 2 * H, *g = an + 3 * H;
            R *d = dat + n * G, *dhtn = dht + n * H, *dhx = dh_next + n * H, *dcx = dc_next + n * H;
            R *di = d, *df = d + H, *dox = d + 2 * H, *dg = d + 3 * H;
            if (m) {
                VEC for (long j = 0; j < H; j++) dhtn[j] = dhn[j] + dhx[j];
                if (trace_dh) for (long j = 0; j < H; j++) trace_dh[(t + 1) * NH + n * H + j] = dhtn[j];
                VEC for (long j = 0; j < H; j++) {
                    R ht = dhtn[j], tj = tcn[j];
                    R dc = dcx[j] + ht * o[j] * ((R)1 - tj * tj);  /* dc = dc_next + dh o (1 - tanh^2 c) */
                    R ij = i[j], fj = f[j], oj = o[j], gj = g[j];
                    dox[j] = ht * tj * oj * ((R)1 - oj);        /* do, through the sigmoid */
                    df[j] = dc * cpn[j] * fj * ((R)1 - fj);     /* df = dc c_{t-1} */
                    di[j] = dc * gj * ij * ((R)1 - ij);         /* di = dc g */
                    dg[j] = dc * ij * ((R)1 - gj * gj);         /* dg = dc i, through the tanh */
                    dcx[j] = dc;                                /* kept for the trace below */
                }
                if (trace_dc) for (long j = 0; j < H; j++) trace_dc[(t + 1) * NH + n * H + j] = dcx[j];
                VEC for (long j = 0; j < H; j++) dcx[j] *= f[j];  /* dc_{t-1} = dc f */
            } else {
                /* A padded step receives no gradient and passes the state gradient through. */
                for (long j = 0; j < H; j++) dhtn[j] = dhx[j];
                if (trace_dh) for (long j = 0; j < H; j++) trace_dh[(t + 1) * NH + n * H + j] = dhtn[j];
                if (trace_dc) for (long j = 0; j < H; j++) trace_dc[(t + 1) * NH + n * H + j] = dcx[j];
                for (long j = 0; j < G; j++) d[j] = 0;
            }
        }
        /* dh_{t-1} = da Wh^T */
        GEMM(gemm, ilp64, P, n1 - n0, H, G, dat + n0 * G, G, WhT, H, (R)0, dh_next + n0 * H, H);
        if (mask)
            for (long n = n0; n < n1; n++)
                if (!mask[t * N + n])
                    for (long j = 0; j < H; j++) dh_next[n * H + j] = dht[n * H + j];
    }
    free(P);
}

/* One GRU step's element-wise work on one batch row: an (3H) the x-side pre-activations [r,z,n] (+ b)
 * in, activations out; hw (3H) = h_{t-1} Wh; hnr (H) out: h_{t-1} W_hn + b_hn; ho = h_t unless ho is
 * NULL (a rebuild from known hidden states, gru_cells); a padded step (pad) carries h_{t-1}. */
static inline void FN(gru_cell)(long H, R *an, const R *hw, const R *bhn, R *hnr, const R *hpn, R *ho,
                                int pad) {
    VEC for (long j = 0; j < 2 * H; j++) an[j] = SIGM(an[j] + hw[j]);  /* r, z */
    R *r = an, *z = an + H, *n = an + 2 * H;
    VEC for (long j = 0; j < H; j++) {
        R q = hw[2 * H + j] + bhn[j];
        hnr[j] = q;
        n[j] = TANH(n[j] + r[j] * q);                  /* n = tanh(x W_xn + b_in + r hn) */
    }
    if (ho) {
        VEC for (long j = 0; j < H; j++) ho[j] = n[j] + z[j] * (hpn[j] - n[j]);  /* h_t = n + z (h_{t-1} - n) */
        if (pad)
            for (long j = 0; j < H; j++) ho[j] = hpn[j];
    }
}

/* GRU forward. gates (T,N,3H) [r,z,n] x-side pre-activations (+ b) in, activations out; h (T+1,N,H);
 * hn (T,N,H) out: h_{t-1} W_hn + b_hn; hW (N,3H) scratch; Wh (H,3H); bhn (H,). */
EXPORT void FN(gru_fw)(long T, long N, long H, long n0, long n1, R *gates, R *h, R *hn, R *hW,
                       const R *Wh, const R *bhn, const unsigned char *mask, void *gemm, int ilp64) {
    const long G = 3 * H, NH = N * H;
    R *P = PACK(ilp64, n1 - n0, Wh, H, G);
    for (long t = 0; t < T; t++) {
        R *a = gates + t * N * G;
        const R *hp = h + t * NH;
        R *hnext = h + (t + 1) * NH, *hnt = hn + t * NH;
        /* hW = h_{t-1} Wh */
        GEMM(gemm, ilp64, P, n1 - n0, G, H, hp + n0 * H, H, Wh, G, (R)0, hW + n0 * G, G);
        for (long nn = n0; nn < n1; nn++)
            FN(gru_cell)(H, a + nn * G, hW + nn * G, bhn, hnt + nn * H, hp + nn * H, hnext + nn * H,
                         mask && !mask[t * N + nn]);
    }
    free(P);
}

/* The element-wise part of gru_fw alone, for the cache rebuilt from known hidden states
 * (gru_recompute): gates (T,N,3H) x-side pre-activations in, activations out; hW (T,N,3H) = h_{t-1} Wh
 * of every step; hn (T,N,H) out. No step depends on another: no mask is needed (a padded step's gates
 * are computed as the forward computed them, and never read). */
EXPORT void FN(gru_cells)(long T, long N, long H, long n0, long n1, R *gates, const R *hW, R *hn,
                          const R *bhn, void *gemm, int ilp64) {
    (void)gemm;
    (void)ilp64;
    const long G = 3 * H, NH = N * H;
    for (long t = 0; t < T; t++)
        for (long nn = n0; nn < n1; nn++)
            FN(gru_cell)(H, gates + (t * N + nn) * G, hW + (t * N + nn) * G, bhn,
                         hn + t * NH + nn * H, NULL, NULL, 0);
}

/* GRU BPTT. dxa, dha (T,N,3H) out; WhT (3H,H); dh_next (N,H) in/out; dht (N,H) scratch. */
EXPORT void FN(gru_bw)(long T, long N, long H, long n0, long n1, const R *dh, const R *gates,
                       const R *h, const R *hn,
                       const R *WhT, const unsigned char *mask, R *dh_next, R *dxa, R *dha, R *dht,
                       R *trace_dh, void *gemm, int ilp64) {
    const long G = 3 * H, NH = N * H;
    R *P = PACK(ilp64, n1 - n0, WhT, G, H);
    for (long t = T - 1; t >= 0; t--) {
        const R *a = gates + t * N * G, *hp = h + t * NH, *hnt = hn + t * NH, *dhs = dh + t * NH;
        R *dxt = dxa + t * N * G, *dht3 = dha + t * N * G;
        for (long nn = n0; nn < n1; nn++) {
            const int m = mask ? mask[t * N + nn] != 0 : 1;
            const R *an = a + nn * G, *hpn = hp + nn * H, *hnr = hnt + nn * H, *dhn = dhs + nn * H;
            const R *r = an, *z = an + H, *n = an + 2 * H;
            R *dx = dxt + nn * G, *dhh = dht3 + nn * G, *dhtn = dht + nn * H, *dhx = dh_next + nn * H;
            if (m) {
                VEC for (long j = 0; j < H; j++) dhtn[j] = dhn[j] + dhx[j];
            } else {
                for (long j = 0; j < H; j++) dhtn[j] = dhx[j];
            }
            if (trace_dh) for (long j = 0; j < H; j++) trace_dh[(t + 1) * NH + nn * H + j] = dhtn[j];
            if (m) {
                VEC for (long j = 0; j < H; j++) {
                    R d = dhtn[j], zj = z[j], nj = n[j], rj = r[j];
                    R dz = d * (hpn[j] - nj) * zj * ((R)1 - zj);  /* dz = dh (h_{t-1} - n), sigmoid' */
                    R dn = d * ((R)1 - zj) * ((R)1 - nj * nj);    /* dn = dh (1 - z), tanh' */
                    R dr = dn * hnr[j] * rj * ((R)1 - rj);        /* dr = dn hn, sigmoid' */
                    dx[j] = dr; dx[H + j] = dz; dx[2 * H + j] = dn;
                    dhh[j] = dr; dhh[H + j] = dz; dhh[2 * H + j] = dn * rj;  /* dhn = dn r */
                }
            } else {
                for (long j = 0; j < G; j++) { dx[j] = 0; dhh[j] = 0; }
            }
        }
        GEMM(gemm, ilp64, P, n1 - n0, H, G, dht3 + n0 * G, G, WhT, H, (R)0, dh_next + n0 * H, H);
        for (long nn = n0; nn < n1; nn++) {
            const int m = mask ? mask[t * N + nn] != 0 : 1;
            R *dhx = dh_next + nn * H, *dhtn = dht + nn * H;
            const R *z = a + nn * G + H;
            if (m) {
                VEC for (long j = 0; j < H; j++) dhx[j] += dhtn[j] * z[j];  /* + dh z */
            } else {
                for (long j = 0; j < H; j++) dhx[j] = dhtn[j];
            }
        }
    }
    free(P);
}

/* RNN forward. h (T+1,N,H): h[0] the initial state, h[1:] holding x_t Wx + b on entry. relu: 0 or 1. */
EXPORT void FN(rnn_fw)(long T, long N, long H, long n0, long n1, R *h, const R *Wh,
                       const unsigned char *mask, int relu, void *gemm, int ilp64) {
    const long NH = N * H, j0 = n0 * H, j1 = n1 * H;
    R *P = PACK(ilp64, n1 - n0, Wh, H, H);
    for (long t = 0; t < T; t++) {
        const R *hp = h + t * NH;
        R *hn = h + (t + 1) * NH;
        GEMM(gemm, ilp64, P, n1 - n0, H, H, hp + j0, H, Wh, H, (R)1, hn + j0, H);
        if (relu) {
            VEC for (long j = j0; j < j1; j++) hn[j] = hn[j] > 0 ? hn[j] : (R)0;
        } else {
            VEC for (long j = j0; j < j1; j++) hn[j] = TANH(hn[j]);
        }
        if (mask)
            for (long n = n0; n < n1; n++)
                if (!mask[t * N + n])
                    for (long j = 0; j < H; j++) hn[n * H + j] = hp[n * H + j];
    }
    free(P);
}

/* RNN BPTT. da (T,N,H) out; WhT (H,H); dh_next (N,H) in/out; dht (N,H) scratch. */
EXPORT void FN(rnn_bw)(long T, long N, long H, long n0, long n1, const R *dh, const R *h, const R *WhT,
                       const unsigned char *mask, int relu, R *dh_next, R *da, R *dht, R *trace_dh,
                       void *gemm, int ilp64) {
    const long NH = N * H;
    R *P = PACK(ilp64, n1 - n0, WhT, H, H);
    for (long t = T - 1; t >= 0; t--) {
        const R *hs = h + (t + 1) * NH, *dhs = dh + t * NH;
        R *dat = da + t * NH;
        for (long n = n0; n < n1; n++) {
            const int m = mask ? mask[t * N + n] != 0 : 1;
            R *d = dat + n * H, *dhtn = dht + n * H, *dhx = dh_next + n * H;
            const R *hn = hs + n * H, *dhn = dhs + n * H;
            if (m) {
                VEC for (long j = 0; j < H; j++) dhtn[j] = dhn[j] + dhx[j];
            } else {
                for (long j = 0; j < H; j++) dhtn[j] = dhx[j];
            }
            if (trace_dh) for (long j = 0; j < H; j++) trace_dh[(t + 1) * NH + n * H + j] = dhtn[j];
            if (!m) {
                for (long j = 0; j < H; j++) d[j] = 0;
            } else if (relu) {
                VEC for (long j = 0; j < H; j++) d[j] = hn[j] > 0 ? dhtn[j] : (R)0;
            } else {
                VEC for (long j = 0; j < H; j++) d[j] = dhtn[j] * ((R)1 - hn[j] * hn[j]);
            }
        }
        GEMM(gemm, ilp64, P, n1 - n0, H, H, dat + n0 * H, H, WhT, H, (R)0, dh_next + n0 * H, H);
        if (mask)
            for (long n = n0; n < n1; n++)
                if (!mask[t * N + n])
                    for (long j = 0; j < H; j++) dh_next[n * H + j] = dht[n * H + j];
    }
    free(P);
}

/* minGRU forward (rnnkit/functional/mingru.py): gates (T,N,2H) [z,c] pre-activations x Wx + b in, z
 * through the sigmoid out; h (T+1,N,H) with h[0] set: h_t = (1 - z) h_{t-1} + z c, a padded step
 * carrying h_{t-1}. No product: the gates read the input only, so the step is this one pass. */
EXPORT void FN(mingru_fw)(long T, long N, long H, long n0, long n1, R *gates, R *h,
                          const unsigned char *mask, void *gemm, int ilp64) {
    (void)gemm;
    (void)ilp64;
    const long NH = N * H;
    for (long t = 0; t < T; t++)
        for (long n = n0; n < n1; n++) {
            R *z = gates + (t * N + n) * 2 * H;
            const R *c = z + H, *hp = h + t * NH + n * H;
            R *hn = h + (t + 1) * NH + n * H;
            VEC for (long j = 0; j < H; j++) {
                const R zj = SIGM(z[j]);
                z[j] = zj;
                hn[j] = ((R)1 - zj) * hp[j] + zj * c[j];
            }
            if (mask && !mask[t * N + n])
                for (long j = 0; j < H; j++) hn[j] = hp[j];
        }
}

/* minGRU BPTT: dh (T,N,H); gates (T,N,2H) [z,c] as the forward left them; h (T+1,N,H); dh_next (N,H)
 * in: the gradient of h[T], out: of h[0]; dgates (T,N,2H) out: the pre-activations' gradient; trace_dh
 * (T+1,N,H) or NULL. g = dh_t + g_next; dz = g (c - h_{t-1}) z (1 - z); dc = g z; g_next = g (1 - z). */
EXPORT void FN(mingru_bw)(long T, long N, long H, long n0, long n1, const R *dh, const R *gates,
                          const R *h, const unsigned char *mask, R *dh_next, R *dgates, R *trace_dh,
                          void *gemm, int ilp64) {
    (void)gemm;
    (void)ilp64;
    const long NH = N * H;
    for (long t = T - 1; t >= 0; t--)
        for (long n = n0; n < n1; n++) {
            const R *z = gates + (t * N + n) * 2 * H, *c = z + H, *hp = h + t * NH + n * H;
            const R *dhn = dh + t * NH + n * H;
            R *g = dh_next + n * H, *dz = dgates + (t * N + n) * 2 * H, *dc = dz + H;
            R *tr = trace_dh ? trace_dh + (t + 1) * NH + n * H : NULL;
            if (mask && !mask[t * N + n]) {  /* no gradient here; the state's passes through */
                for (long j = 0; j < 2 * H; j++) dz[j] = 0;
                if (tr) for (long j = 0; j < H; j++) tr[j] = g[j];
                continue;
            }
            VEC for (long j = 0; j < H; j++) {
                const R gj = dhn[j] + g[j], zj = z[j];
                if (tr) tr[j] = gj;  /* the compiler lifts the test out of the loop */
                dz[j] = gj * (c[j] - hp[j]) * (zj * ((R)1 - zj));
                dc[j] = gj * zj;
                g[j] = gj * ((R)1 - zj);
            }
        }
}

#undef SIGM
