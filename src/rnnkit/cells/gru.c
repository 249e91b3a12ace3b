/* The GRU's time loops (forward, the cache rebuilt from known hidden states, BPTT).
 * Compiled through rnnkit/kernels/instantiate.c, once for float and once for double (R, FN, GEMM,
 * TANH, SIGM: rnnkit/kernels/rnnkit_kernels.h). Each function mirrors, line for line, the NumPy
 * reference of the same name and arguments in rnnkit/cells/gru.py (same buffers, same masking
 * rules); the reference is the specification and tests/test_fast_kernels.py checks the two agree.
 * Layouts are row-major and contiguous. Each call runs the batch rows [n0, n1) of N: the rows of a
 * batch never meet inside the time loop, so disjoint row ranges run on separate threads with no
 * synchronisation. */

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
