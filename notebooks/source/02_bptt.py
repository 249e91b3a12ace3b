# %% [markdown]
# # 2. Backpropagation through time, and truncated BPTT
#
# *Follows section 3 of the lecture guide, "BPTT" and "Truncated BPTT".*
#
# Unrolled, a recurrent net is a deep feed-forward net whose layers share their weights, and the
# gradient of a shared weight is the sum of its gradients at every step. This notebook
#
# 1. checks rnnkit's hand-written BPTT against a numerical gradient, by hand;
# 2. measures the activation memory BPTT keeps between forward and backward: it grows with T, and
#    `recompute=k` (keep the state every k steps, rebuild each segment in backward) bounds it with the
#    same gradients;
# 3. runs truncated BPTT on a long sequence: chunks of k steps, the state carried from chunk to chunk,
#    the gradient cut at each boundary, and draws it.

# %%
import os
import tracemalloc

import matplotlib.pyplot as plt
import numpy as np

import rnnkit

SMALL = os.environ.get("RNNKIT_NOTEBOOK_SMALL") == "1"  # the quick setting CI runs


def rel_error(a, b):
    """CS231n's relative error: max |a - b| / max(1e-8, |a| + |b|)."""
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))


rng = np.random.default_rng(0)

# %% [markdown]
# ## A gradient check by hand
#
# The loss is $L = \sum_t \langle h_t, g_t \rangle$ for a fixed random $g$ (T, N, H), so
# $\partial L / \partial h_t = g_t$ is the upstream gradient handed to `backward`. Each entry of the
# numerical gradient is a centred difference $(L(w + \epsilon) - L(w - \epsilon)) / 2\epsilon$, one
# forward pass per side, in float64.

# %%
T, N, D, H = 6, 3, 4, 5
layer = rnnkit.RNN(D, H, dtype=np.float64, seed=1)
x = rng.normal(size=(T, N, D))
g = rng.normal(size=(T, N, H))


def loss():
    out, _ = layer.forward(x)
    return float(np.sum(out * g))


layer.zero_grad()  # backward adds into the gradients: the caller zeroes them
loss()
dx, _ = layer.backward(g)

eps = 1e-6
for name, p in layer.params.items():
    num = np.zeros_like(p)
    for i in np.ndindex(p.shape):  # one entry at a time, as CS231n's eval_numerical_gradient does
        old = p[i]
        p[i] = old + eps
        up = loss()
        p[i] = old - eps
        down = loss()
        p[i] = old
        num[i] = (up - down) / (2 * eps)
    print(f"d{name:6s} relative error {rel_error(layer.grads[name], num):.1e}")

num_dx = np.zeros_like(x)
for i in np.ndindex(x.shape):
    old = x[i]
    x[i] = old + eps
    up = loss()
    x[i] = old - eps
    down = loss()
    x[i] = old
    num_dx[i] = (up - down) / (2 * eps)
print(f"dx       relative error {rel_error(dx, num_dx):.1e}")

# %% [markdown]
# ## What BPTT keeps: memory that grows with T
#
# Backward needs every step's activations (for the LSTM: its four gates, its cell state and its hidden
# state), so a forward pass keeps O(T) arrays of (N, H) until backward runs. Python's `tracemalloc`
# sees NumPy's buffers: below is what an LSTM layer holds after its forward, beyond its output.
#
# `rnnkit.LSTM(..., recompute=k)` keeps only the state every k steps (Chen et al. 2016, "training deep
# nets with sublinear memory cost"); backward re-runs each k-step segment from its kept state before
# back-propagating through it: about one more forward pass, for memory O(T/k + k) instead of O(T).

# %%
def kept_after_forward(layer, x):
    """Bytes the layer holds between forward and backward, beyond its output."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        out, _ = layer.forward(x)
        return tracemalloc.get_traced_memory()[0] - base - out.nbytes
    finally:
        tracemalloc.stop()


N, D, H = 16, 64, 128
Ts = [64, 128, 256] if SMALL else [64, 128, 256, 512, 1024]
rows = {}
for k in (None, 16, "sqrt"):
    rows[k] = [kept_after_forward(rnnkit.LSTM(D, H, recompute=k), rng.normal(size=(T, N, D))
                                  .astype(np.float32)) / 2**20 for T in Ts]
print("T       " + " ".join(f"{T:>7d}" for T in Ts))
for k, mb in rows.items():
    print(f"{str(k):7s} " + " ".join(f"{m:6.2f}M" for m in mb))

fig, ax = plt.subplots(figsize=(6, 3.2))
for k, mb in rows.items():
    ax.plot(Ts, mb, "o-", label="plain BPTT" if k is None else f"recompute={k!r}")
ax.set_xlabel("sequence length T")
ax.set_ylabel("kept after forward (MiB)")
ax.set_title(f"LSTM, N={N}, H={H}, float32")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# The gradients are the same: recompute rebuilds exactly what plain BPTT kept (checked in float64,
# where the two orders of the same sums agree to about 1e-12).

# %%
T = 200
x = rng.normal(size=(T, N, D))
dout = rng.normal(size=(T, N, H))
grads = {}
for k in (None, 16):
    lstm = rnnkit.LSTM(D, H, recompute=k, seed=3, dtype=np.float64)
    lstm.zero_grad()
    lstm.forward(x)
    dx, _ = lstm.backward(dout)
    grads[k] = (dx, {n: g.copy() for n, g in lstm.grads.items()})
print("dx, recompute=16 vs plain:", f"{rel_error(grads[16][0], grads[None][0]):.1e}")
for n in grads[None][1]:
    print(f"d{n}:", f"{rel_error(grads[16][1][n], grads[None][1][n]):.1e}")

# %% [markdown]
# ## Truncated BPTT: chunks, the state carried, the gradient cut
#
# On a long stream (a book, for a language model) even bounded memory is too much, and one update per
# book too few. Truncated BPTT cuts the stream into chunks of k steps. Each chunk runs forward from
# the previous chunk's final state (the memory is carried), and backward stops at the chunk's start
# (no gradient into the previous chunk): `backward(dout)` with the initial state treated as a
# constant. This is what `rnnkit.models.lm.CharLM.forward(tokens, state)` / `backward` do.
#
# To see the cut, put a loss on the last step of a 3-chunk stream and look at how much gradient
# reaches each input step $x_t$: with full BPTT it reaches back through all three chunks, with
# truncated BPTT only through the last one.

# %%
T, k = 60, 20
x = rng.normal(size=(T, 1, 4))
rnn = rnnkit.RNN(4, 16, dtype=np.float64, seed=2)
g_last = rng.normal(size=(1, 16))

# full BPTT: one forward over all T steps, the loss's gradient at the last step only
out, _ = rnn.forward(x)
dout = np.zeros_like(out)
dout[-1] = g_last
rnn.zero_grad()
dx_full, _ = rnn.backward(dout)

# truncated BPTT: chunk by chunk, the final state handed on as a plain array (no gradient path)
state, dx_trunc = None, np.zeros_like(x)
for start in range(0, T, k):
    out_c, state = rnn.forward(x[start:start + k], state)
    dout_c = np.zeros_like(out_c)
    if start + k == T:
        dout_c[-1] = g_last
    rnn.zero_grad()
    dx_c, dstate0 = rnn.backward(dout_c)  # dstate0 is the gradient truncated BPTT throws away
    dx_trunc[start:start + k] = dx_c
print("the carried state gives the same final output:",
      f"{rel_error(out_c[-1], out[-1]):.1e}")

fig, ax = plt.subplots(figsize=(8, 3.2))
t = np.arange(T)
ax.semilogy(t, np.linalg.norm(dx_full[:, 0], axis=-1) + 1e-30, "k.-", label="full BPTT")
ax.semilogy(t, np.linalg.norm(dx_trunc[:, 0], axis=-1) + 1e-30, "C3.-", label=f"truncated, k={k}")
for i, start in enumerate(range(0, T, k)):
    ax.axvspan(start, start + k, color=f"C{i}", alpha=0.08)
    ax.text(start + k / 2, 0.9, f"chunk {i + 1}", ha="center", transform=ax.get_xaxis_transform())
    if start:
        ax.axvline(start - 0.5, color="C3", ls="--", lw=1)
ax.set_ylim(1e-12, 10)
ax.set_xlabel("input step t  (the loss reads step 59)")
ax.set_ylabel("||dL/dx_t||")
ax.set_title("the state crosses each dashed line forward; the gradient does not cross it back")
ax.legend(loc="lower right")
plt.tight_layout()
plt.show()

# %% [markdown]
# Already within the first chunk, full BPTT's gradient falls by orders of magnitude as it goes back in
# time: that is the vanishing gradient of notebook 3, and the reason truncation loses less than it
# seems to for a vanilla RNN.
