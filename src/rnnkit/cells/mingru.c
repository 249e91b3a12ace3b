/* minGRU's time loops: no product, the step is one element-wise pass (forward and BPTT).
 * Compiled through rnnkit/kernels/instantiate.c, once for float and once for double (R, FN, GEMM,
 * TANH, SIGM: rnnkit/kernels/rnnkit_kernels.h). Each function mirrors, line for line, the NumPy
 * reference of the same name and arguments in rnnkit/cells/mingru.py (same buffers, same masking
 * rules); the reference is the specification and tests/test_fast_kernels.py checks the two agree.
 * Layouts are row-major and contiguous. Each call runs the batch rows [n0, n1) of N: the rows of a
 * batch never meet inside the time loop, so disjoint row ranges run on separate threads with no
 * synchronisation. */

/* minGRU forward (rnnkit/cells/mingru.py): gates (T,N,2H) [z,c] pre-activations x Wx + b in, z
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
