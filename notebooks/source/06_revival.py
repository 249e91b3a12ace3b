# %% [markdown]
# # 6. The revival: linear recurrences (minGRU, Mamba, RWKV)
#
# *Follows section 5 of the lecture guide, "summary and recent trends": Transformers won sequence
# modelling, but attention costs grows with the square of the length, and recurrent ideas are back
# in Mamba and RWKV.*
#
# What these new recurrences share: the state enters each step only *linearly*,
# $h_t = a_t \odot h_{t-1} + b_t$, with $a_t$ and $b_t$ computed from the input alone. Then
#
# - training runs over the whole sequence at once: the products are over all T steps, and the scan
#   itself can run in parallel over time (a prefix scan in $\lceil \log_2 T \rceil$ passes);
# - generation still runs one token at a time from a fixed-size state, like any RNN.
#
# This notebook runs minGRU's scan sequentially and in parallel, then trains Mamba beside an LSTM on
# selective copying and compares the state each keeps per stream; and RWKV where this rnnkit has it.

# %%
import os

import matplotlib.pyplot as plt
import numpy as np

import rnnkit
from rnnkit.functional import linear_scan
from rnnkit.models.memory import MemoryConfig
from rnnkit.optim import Adam, clip_grad_norm, collect_params
from rnnkit.tasks import MemoryTask

SMALL = os.environ.get("RNNKIT_NOTEBOOK_SMALL") == "1"  # the quick setting CI runs
rng = np.random.default_rng(0)


def rel_error(a, b):
    """CS231n's relative error: max |a - b| / max(1e-8, |a| + |b|)."""
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))

# %% [markdown]
# ## minGRU: the GRU without its recurrent weights
#
# minGRU (Feng et al. 2024, "Were RNNs all we needed?") computes its gate and its candidate from the
# input alone:
#
# $$z_t = \sigma(x_t W_z + b_z), \quad \tilde h_t = x_t W_c + b_c, \quad
#   h_t = (1 - z_t) \odot h_{t-1} + z_t \odot \tilde h_t$$
#
# so $a_t = 1 - z_t$ and $b_t = z_t \tilde h_t$, all computed in one product over the sequence, and the
# time loop is `rnnkit.functional.linear_scan`. Below: the scan by hand, sequentially and as Hillis and
# Steele's parallel prefix scan, against rnnkit's `MinGRU` layer.

# %%
T, N, D, H = 1000, 4, 8, 16
layer = rnnkit.MinGRU(D, H, dtype=np.float64, seed=0)
Wx, b = layer.params["l0.Wx"], layer.params["l0.b"]  # (D, 2H): the gate's columns, then the candidate's
x = rng.normal(size=(T, N, D))
pre = x @ Wx + b  # (T, N, 2H): one product for the whole sequence
z = 1 / (1 + np.exp(-pre[..., :H]))
a_t, b_t = 1 - z, z * pre[..., H:]
h0 = np.zeros((N, H))

h_seq = linear_scan(a_t, b_t, h0)  # T passes, one per step
h_par = linear_scan(a_t, b_t, h0, parallel=True)  # ceil(log2 T) passes over all steps at once
out, _ = layer.forward(x)
print(f"sequential vs parallel scan: {rel_error(h_seq, h_par):.1e}")
print(f"the scan vs rnnkit.MinGRU:   {rel_error(h_seq[1:], out):.1e}")
print(f"passes: sequential {T}, parallel {int(np.ceil(np.log2(T)))}")

# %% [markdown]
# The parallel scan composes pairs $(a, b)$: $(a_2, b_2) \circ (a_1, b_1) = (a_2 a_1,\ a_2 b_1 + b_2)$.
# After the pass with offset $d$, position $t$ holds the composition of steps $t - 2d + 1 \dots t$.
# Here is that by hand for T = 8, with the span each position covers after each pass:

# %%
T8 = 8
A, B = rng.uniform(0.5, 1, T8), rng.normal(size=T8)
span = [(t, t) for t in range(T8)]
d, passes = 1, [list(span)]
A_, B_ = A.copy(), B.copy()
while d < T8:
    B_[d:] = A_[d:] * B_[:-d] + B_[d:]
    A_[d:] = A_[d:] * A_[:-d]
    span = [(span[t - d][0], t) if t >= d else span[t] for t in range(T8)]
    passes.append(list(span))
    d *= 2
fig, ax = plt.subplots(figsize=(7, 2.4))
for p, spans in enumerate(passes):
    for t, (s, e) in enumerate(spans):
        ax.plot([s, e], [p + t / 20, p + t / 20], "-", color=f"C{t}", lw=2)
ax.set_yticks(range(len(passes)))
ax.set_yticklabels([f"pass {p}" for p in range(len(passes))])
ax.set_xlabel("steps composed at each position (one colour per position)")
ax.invert_yaxis()
plt.tight_layout()
plt.show()
print(f"after {len(passes) - 1} passes, equal to the loop: "
      f"{rel_error(B_, linear_scan(A[:, None], B[:, None], np.zeros(1))[1:, 0]):.1e}")

# %% [markdown]
# ## Mamba beside the LSTM on selective copying
#
# Selective copying (Gu and Dao 2023): a sequence of noise tokens with a few data tokens scattered at
# random positions; at the end, after a marker, the model must output the data tokens in order. A fixed
# delay would not do (the positions vary): the model must *choose* what to write into its state, which
# is what Mamba's input-dependent step size $\Delta_t$ and its $B_t$, $C_t$ are for:
#
# $$h_t = \exp(\Delta_t A) \odot h_{t-1} + \Delta_t B_t x_t, \qquad y_t = C_t h_t + D x_t$$
#
# The models have about the same number of parameters and see the same batches. RWKV-7 (where this
# rnnkit has it) joins them: its state per head is a matrix, written by the delta rule
# $S_t = S_{t-1}\,\mathrm{diag}(w_t) - (S_{t-1} \hat k_t)(a_t \odot \hat k_t)^\top + v_t \tilde k_t^\top$.

# %%
length, steps = (32, 80) if SMALL else (64, 600)
models = {
    "LSTM": MemoryConfig(task="selective-copy", cell="lstm", length=length, tokens=4, hidden=48,
                         test_size=500, dtype="float32"),
    "Mamba": MemoryConfig(task="selective-copy", cell="mamba", length=length, tokens=4, hidden=24,
                          layers=2, test_size=500, dtype="float32"),
}
RWKV = next((name for name in ("rwkv", "rwkv7") if name in rnnkit.cells.names()), None)
if RWKV:  # RWKV joins the comparison where this rnnkit registers it as a cell
    models["RWKV"] = MemoryConfig(task="selective-copy", cell=RWKV, length=length, tokens=4, hidden=16,
                                  layers=2, test_size=500, dtype="float32")
else:
    print("RWKV is not a registered cell in this rnnkit (rnnkit.cells.names():",
          ", ".join(rnnkit.cells.names()) + "); it is left out")

results = {}
for name, cfg in models.items():
    task = MemoryTask(cfg)
    params = collect_params(model=task.model)
    opt = Adam(params, lr=3e-3)
    source = task.source()  # endless batches: x (T, N) tokens, y (K, N) the answers
    curve = []
    for it in range(steps):
        x, y = source.next_batch()
        opt.zero_grad()
        task.train_step((x, y))  # forward, loss, backward
        clip_grad_norm(params, 1.0)
        opt.step()
        if (it + 1) % (steps // 4) == 0:
            curve.append((it + 1, task.evaluate()["test_acc"]))
    results[name] = {"task": task, "curve": curve,
                     "params": sum(p.size for _, p, _ in task.model.named_parameters())}
    print(f"{name:6s} {results[name]['params']:6d} parameters, test accuracy on the data tokens "
          + ", ".join(f"{acc:.2f} at {s}" for s, acc in curve))
print(f"chance: {task.evaluate()['chance_acc']:.2f}")

# %% [markdown]
# ## The state each keeps per stream
#
# Generation needs only the state: its size per stream is what a recurrent model keeps in memory
# however long the context, where a Transformer's key-value cache grows with every token. The LSTM
# keeps $h$ and $c$; RWKV keeps, per layer, the last inputs of its two token shifts and a (C, C) matrix
# per head; Mamba keeps, per layer, the last inputs of its causal convolution and an (E, S)
# matrix (E inner channels, S state size) per stream.

# %%
for name, r in results.items():
    rnn = r["task"].model.rnn
    parts = rnn.state_parts(rnn.init_state(1))  # one stream
    sizes = {part: p.shape for part, p in zip(rnn.cell.state, parts)}
    total = sum(int(np.prod(p.shape)) for p in parts)
    print(f"{name:6s} state per stream: {total:5d} numbers  {sizes}")

# %% [markdown]
# One token at a time: `Recurrent.step(x, state)` advances any of these layers by one step from its
# state, and gives the same outputs as the whole-sequence forward.

# %%
for name, r in results.items():
    model = r["task"].model
    x, _ = r["task"].source().next_batch()
    inp = model.inputs(x[:, :2])  # two streams, one-hot tokens (T, 2, V)
    full, _ = model.rnn.forward(inp)
    state, outs = None, []
    for t in range(inp.shape[0]):
        y, state = model.rnn.step(inp[t], state)
        outs.append(y)
    print(f"{name:6s} step by step vs the whole sequence: {np.max(np.abs(np.stack(outs) - full)):.1e}"
          " (largest difference, float32)")
