/* Element-wise passes over flat arrays, for one real type R (float or double): the Adam update and the
 * softmax cross-entropy. Compiled through instantiate.c for float and double (R / SFX / SQRT / EXP / LOG).
 *
 * Each mirrors a NumPy reference that stays the specification (rnnkit/optim/optimizers.py `Adam`,
 * rnnkit/functional/layers.py `softmax_cross_entropy`), and tests/test_fast_kernels.py checks the two
 * agree. Why compiled: the references make eight to ten passes over memory, each a separate ufunc on a
 * temporary; here each element is read and written once, and a call takes a range [i0, i1) so that
 * disjoint ranges run on rnnkit's threads.
 */

/* Adam over elements [i0, i1) of p, g, m, v (torch's arithmetic, as the reference):
 *     p *= decay                       decoupled weight decay (AdamW): decay = 1 - lr wd, else 1
 *     g += wd p                        L2 weight decay (Adam): wd, else 0
 *     m = b1 m + (1 - b1) g
 *     v = b2 v + (1 - b2) g^2
 *     p -= step * m / (sqrt(v) / sbc2 + eps)      step = lr / (1 - b1^t), sbc2 = sqrt(1 - b2^t) */
EXPORT void FN(adam)(long i0, long i1, R *p, const R *g, R *m, R *v, R b1, R b2, R step, R sbc2,
                     R eps, R wd, R decay) {
    const R c1 = (R)1 - b1, c2 = (R)1 - b2;
    VEC for (long i = i0; i < i1; i++) {
        const R pi = p[i] * decay;     /* exact when decay = 1 */
        const R gi = g[i] + wd * pi;   /* exact when wd = 0 */
        const R mi = b1 * m[i] + c1 * gi;
        const R vi = b2 * v[i] + c2 * (gi * gi);
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - step * (mi / (SQRT(vi) / sbc2 + eps));
    }
}

/* Softmax cross-entropy of rows [r0, r1) of logits (M, V) with labels y (M,), row weights w (M,) (NULL:
 * all 1) and label smoothing eps (the target is 1 - eps on y plus eps / V everywhere):
 *     nll[r] = log sum_j exp(x_rj - max_r) - (1 - eps) (x_ry - max_r) - eps mean_j (x_rj - max_r)
 *     dlogits[r] = (softmax(x_r) - (1 - eps) onehot(y_r) - eps / V) * w[r] * scale    scale = 1 / count
 * dlogits may be the logits themselves (the gradient overwrites them). With eps = 0 this is plain
 * cross-entropy to the last bit. */
EXPORT void FN(softmax_xent)(long r0, long r1, long V, const R *logits, const int64_t *y, const R *w,
                             R scale, R eps, R *dlogits, double *nll) {
    for (long r = r0; r < r1; r++) {
        const R *x = logits + r * V;
        R *d = dlogits + r * V;
        R mx = x[0];
        _Pragma("omp simd reduction(max:mx)") for (long j = 1; j < V; j++) mx = x[j] > mx ? x[j] : mx;
        const R xy = x[y[r]] - mx;  /* read before d (possibly x itself) is overwritten */
        R sx = 0;  /* sum_j (x_rj - max_r), smoothing only: its own pass keeps the plain loop as fast */
        if (eps != 0) {
            _Pragma("omp simd reduction(+:sx)") for (long j = 0; j < V; j++) sx += x[j] - mx;
        }
        R s = 0;
        _Pragma("omp simd reduction(+:s)") for (long j = 0; j < V; j++) {
            const R e = EXP(x[j] - mx);
            d[j] = e;
            s += e;
        }
        nll[r] = (double)LOG(s) - (double)xy;
        if (eps != 0)  /* not 0 * sx: logits of -inf make sx -inf */
            nll[r] += (double)eps * ((double)xy - (double)sx / (double)V);
        const R wr = (w ? w[r] : (R)1) * scale;
        const R k = wr / s, off = wr * eps / (R)V;
        VEC for (long j = 0; j < V; j++) d[j] = d[j] * k - off;
        d[y[r]] -= wr * ((R)1 - eps);
    }
}

/* Mean of rows per bag (rnnkit/functional/layers.py `bag_mean_forward`), for bags [u0, u1) of D columns:
 *     out[u] = inv[u] * sum_{j in [ends[u], ends[u+1])} W[grams[j]]          inv[u] = 1 / |bag u| */
EXPORT void FN(bag_mean)(long u0, long u1, long D, const int64_t *grams, const int64_t *ends,
                         const R *W, const R *inv, R *out) {
    for (long u = u0; u < u1; u++) {
        R *o = out + u * D;
        VEC for (long c = 0; c < D; c++) o[c] = 0;
        for (long j = ends[u]; j < ends[u + 1]; j++) {
            const R *w = W + grams[j] * D;
            VEC for (long c = 0; c < D; c++) o[c] += w[c];
        }
        const R k = inv[u];
        VEC for (long c = 0; c < D; c++) o[c] *= k;
    }
}

/* Its backward (`bag_mean_backward_into`) for columns [c0, c1) of all U bags, so that threads given
 * disjoint columns never write the same element of dW even where bags share a gram:
 *     dW[grams[j], c] += dout[u, c] * inv[u]            for every gram j of bag u */
EXPORT void FN(bag_scatter)(long c0, long c1, long U, long D, const int64_t *grams, const int64_t *ends,
                            const R *dout, const R *inv, R *dW) {
    for (long u = 0; u < U; u++) {
        const R k = inv[u];
        const R *d = dout + u * D;
        for (long j = ends[u]; j < ends[u + 1]; j++) {
            R *g = dW + grams[j] * D;
            VEC for (long c = c0; c < c1; c++) g[c] += d[c] * k;
        }
    }
}
