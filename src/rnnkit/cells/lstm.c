/* The LSTM's time loops (forward, the cache rebuilt from known hidden states, BPTT).
 * Compiled through rnnkit/kernels/instantiate.c, once for float and once for double (R, FN, GEMM,
 * TANH, SIGM: rnnkit/kernels/rnnkit_kernels.h). Each function mirrors, line for line, the NumPy
 * reference of the same name and arguments in rnnkit/cells/lstm.py (same buffers, same masking
 * rules); the reference is the specification and tests/test_fast_kernels.py checks the two agree.
 * Layouts are row-major and contiguous. Each call runs the batch rows [n0, n1) of N: the rows of a
 * batch never meet inside the time loop, so disjoint row ranges run on separate threads with no
 * synchronisation. */

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
