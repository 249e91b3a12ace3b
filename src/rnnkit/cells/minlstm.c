/* minLSTM's time loops: no product, the step is one element-wise pass (forward and BPTT).
 * Compiled through rnnkit/kernels/instantiate.c, once for float and once for double (R, FN, EXP:
 * rnnkit/kernels/rnnkit_kernels.h). Each function mirrors, line for line, the NumPy reference of the
 * same name and arguments in rnnkit/cells/minlstm.py (same buffers, same masking rules); the reference
 * is the specification and tests/test_minlstm.py checks the two agree. Layouts are row-major and
 * contiguous. Each call runs the batch rows [n0, n1) of N: the rows of a batch never meet inside the
 * time loop, so disjoint row ranges run on separate threads with no synchronisation. */

/* minLSTM forward (rnnkit/cells/minlstm.py): gates (T,N,3H) [f,i,h~] pre-activations x Wx + b in, f and
 * i through the sigmoid out; fp (T,N,H) out: f' = f/(f+i); h (T+1,N,H) with h[0] set:
 * h_t = f' h_{t-1} + i' h~, a padded step carrying h_{t-1}. The gates and their ratio are formed from
 * e^{-|k|} (minlstm.py's _gates): no exponent is positive and A + B >= 1, so where both gates are
 * nearly shut f' is still exact, not 0/0 of two underflowed sigmoids. */
EXPORT void FN(minlstm_fw)(long T, long N, long H, long n0, long n1, R *gates, R *fp, R *h,
                           const unsigned char *mask, void *gemm, int ilp64) {
    (void)gemm;
    (void)ilp64;
    const long NH = N * H;
    for (long t = 0; t < T; t++)
        for (long n = n0; n < n1; n++) {
            R *f = gates + (t * N + n) * 3 * H, *i = f + H;
            const R *c = f + 2 * H, *hp = h + t * NH + n * H;
            R *fn = fp + t * NH + n * H, *hn = h + (t + 1) * NH + n * H;
            VEC for (long j = 0; j < H; j++) {
                const R kf = f[j], ki = i[j];
                const R ef = EXP(kf >= 0 ? -kf : kf), ei = EXP(ki >= 0 ? -ki : ki); /* e^{-|k|} */
                const R qf = (R)1 + ef, qi = (R)1 + ei;
                const R d = (ki < 0 ? ki : (R)0) - (kf < 0 ? kf : (R)0); /* min(ki,0) - min(kf,0) */
                const R s = EXP(d >= 0 ? -d : d);
                const R A = (d <= 0 ? (R)1 : s) * qi, B = (d <= 0 ? s : (R)1) * qf;
                const R r = (R)1 / (A + B);
                f[j] = (kf >= 0 ? (R)1 : ef) / qf; /* sigmoid(kf) */
                i[j] = (ki >= 0 ? (R)1 : ei) / qi; /* sigmoid(ki) */
                fn[j] = A * r;                     /* f' */
                hn[j] = A * r * hp[j] + B * r * c[j]; /* f' h_{t-1} + i' h~ */
            }
            if (mask && !mask[t * N + n])
                for (long j = 0; j < H; j++) hn[j] = hp[j];
        }
}

/* minLSTM BPTT: dh (T,N,H); gates (T,N,3H) [f,i,h~] and fp (T,N,H) as the forward left them; h
 * (T+1,N,H); dh_next (N,H) in: the gradient of h[T], out: of h[0]; dgates (T,N,3H) out: the
 * pre-activations' gradient; trace_dh (T+1,N,H) or NULL. g = dh_t + g_next; w = g (h_{t-1} - h~) f' i'
 * (dL/df' through the quotient rule); dkf = w (1 - f); dki = -w (1 - i); dh~ = g i'; g_next = g f'. */
EXPORT void FN(minlstm_bw)(long T, long N, long H, long n0, long n1, const R *dh, const R *gates,
                           const R *fp, const R *h, const unsigned char *mask, R *dh_next, R *dgates,
                           R *trace_dh, void *gemm, int ilp64) {
    (void)gemm;
    (void)ilp64;
    const long NH = N * H;
    for (long t = T - 1; t >= 0; t--)
        for (long n = n0; n < n1; n++) {
            const R *f = gates + (t * N + n) * 3 * H, *i = f + H, *c = f + 2 * H;
            const R *fn = fp + t * NH + n * H, *hp = h + t * NH + n * H, *dhn = dh + t * NH + n * H;
            R *g = dh_next + n * H, *df = dgates + (t * N + n) * 3 * H, *di = df + H, *dc = df + 2 * H;
            R *tr = trace_dh ? trace_dh + (t + 1) * NH + n * H : NULL;
            if (mask && !mask[t * N + n]) { /* no gradient here; the state's passes through */
                for (long j = 0; j < 3 * H; j++) df[j] = 0;
                if (tr) for (long j = 0; j < H; j++) tr[j] = g[j];
                continue;
            }
            VEC for (long j = 0; j < H; j++) {
                const R gj = dhn[j] + g[j], fj = fn[j], ij = (R)1 - fj;
                if (tr) tr[j] = gj; /* the compiler lifts the test out of the loop */
                const R w = gj * (hp[j] - c[j]) * (fj * ij);
                df[j] = w * ((R)1 - f[j]);
                di[j] = -w * ((R)1 - i[j]);
                dc[j] = gj * ij;
                g[j] = gj * fj;
            }
        }
}
