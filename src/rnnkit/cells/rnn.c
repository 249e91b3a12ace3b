/* The vanilla RNN's time loops (forward and BPTT).
 * Compiled through rnnkit/kernels/instantiate.c, once for float and once for double (R, FN, GEMM,
 * TANH, SIGM: rnnkit/kernels/rnnkit_kernels.h). Each function mirrors, line for line, the NumPy
 * reference of the same name and arguments in rnnkit/cells/rnn.py (same buffers, same masking
 * rules); the reference is the specification and tests/test_fast_kernels.py checks the two agree.
 * Layouts are row-major and contiguous. Each call runs the batch rows [n0, n1) of N: the rows of a
 * batch never meet inside the time loop, so disjoint row ranges run on separate threads with no
 * synchronisation. */

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
