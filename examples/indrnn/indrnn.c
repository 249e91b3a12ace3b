/* IndRNN's time loops (forward and BPTT): no product, the step is one element-wise pass.
 * Written outside the rnnkit package and compiled by it exactly as its own cells' loops are: through
 * rnnkit/kernels/instantiate.c, once for float and once for double (R, FN, VEC: rnnkit_kernels.h).
 * Each function mirrors, line for line, the NumPy reference of the same name and arguments in
 * indrnn.py (same buffers, same masking rules); the reference is the specification and
 * tests/test_adding_a_cell.py checks the two agree. Layouts are row-major and contiguous. Each call
 * runs the batch rows [n0, n1) of N: the rows never meet inside the time loop, so disjoint row ranges
 * run on separate threads with no synchronisation; that is why du is not summed here (every range
 * would add into the same H weights) but after the loop, from da. */

/* IndRNN forward: h (T,N,H), h[0] the initial state and h[1:] holding x_t Wx + b on entry;
 * h_t = relu(x_t Wx + b + u * h_{t-1}), a padded step (mask 0) carrying h_{t-1}. */
EXPORT void FN(indrnn_fw)(long T, long N, long H, long n0, long n1, R *h, const R *u,
                          const unsigned char *mask, void *gemm, int ilp64) {
    (void)gemm;
    (void)ilp64;
    const long NH = N * H;
    for (long t = 0; t < T; t++)
        for (long n = n0; n < n1; n++) {
            const R *hp = h + t * NH + n * H;
            R *hn = h + (t + 1) * NH + n * H;
            if (mask && !mask[t * N + n]) {
                for (long j = 0; j < H; j++) hn[j] = hp[j];
                continue;
            }
            VEC for (long j = 0; j < H; j++) {
                const R a = hn[j] + u[j] * hp[j];
                hn[j] = a > 0 ? a : (R)0;
            }
        }
}

/* IndRNN BPTT: dh (T,N,H) the outputs' gradient; h (T+1,N,H) as the forward left it; dh_prev (N,H)
 * in: the gradient of h[T], out: of h[0]; da (T,N,H) out: the pre-activations' gradient; trace_dh
 * (T+1,N,H) or NULL. g = dh_t + dh_prev; da = g [h_t > 0]; dh_prev = da * u. A padded step has
 * da = 0 and passes dh_prev through unchanged (its output's gradient is never read). */
EXPORT void FN(indrnn_bw)(long T, long N, long H, long n0, long n1, const R *dh, const R *h,
                          const R *u, const unsigned char *mask, R *dh_prev, R *da, R *trace_dh,
                          void *gemm, int ilp64) {
    (void)gemm;
    (void)ilp64;
    const long NH = N * H;
    for (long t = T - 1; t >= 0; t--)
        for (long n = n0; n < n1; n++) {
            const R *hn = h + (t + 1) * NH + n * H, *dhn = dh + t * NH + n * H;
            R *g = dh_prev + n * H, *d = da + t * NH + n * H;
            R *tr = trace_dh ? trace_dh + (t + 1) * NH + n * H : NULL;
            if (mask && !mask[t * N + n]) {
                for (long j = 0; j < H; j++) d[j] = 0;
                if (tr) for (long j = 0; j < H; j++) tr[j] = g[j];
                continue;
            }
            VEC for (long j = 0; j < H; j++) {
                const R gj = dhn[j] + g[j];
                if (tr) tr[j] = gj;  /* the compiler lifts the test out of the loop */
                const R dj = hn[j] > 0 ? gj : (R)0;
                d[j] = dj;
                g[j] = dj * u[j];
            }
        }
}
