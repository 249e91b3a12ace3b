# %% [markdown]
# # 1. The recurrence and its one set of shared weights
#
# *Follows section 1 of the lecture guide, "the loop of memory" and "parameter sharing".*
#
# A recurrent net reads a sequence one step at a time and carries a hidden state $h$ from each step to
# the next:
#
# $$h_t = \tanh(x_t W_x + h_{t-1} W_h + b)$$
#
# The same three arrays $W_x$ (D, H), $W_h$ (H, H) and $b$ (H,) are used at every step, so one set of
# weights reads a sequence of any length. This notebook
#
# 1. steps a vanilla RNN cell by hand in NumPy,
# 2. unrolls it over a batch of sequences of different lengths with the same parameters,
# 3. checks the result against rnnkit's `RNN` layer and against PyTorch's `nn.RNN`, printing relative
#    errors as CS231n's assignments do (below 1e-8 in float64 means the two agree).
#
# Arrays are time-major throughout: `x` is (T, N, D), time first, then the batch, then the features.

# %%
import os

import matplotlib.pyplot as plt
import numpy as np
import torch

import rnnkit
from rnnkit.cells.rnn import rnn_step_forward
from rnnkit.interop import to_torch_state_dict

SMALL = os.environ.get("RNNKIT_NOTEBOOK_SMALL") == "1"  # the quick setting CI runs


def rel_error(a, b):
    """CS231n's relative error: max |a - b| / max(1e-8, |a| + |b|)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))


rng = np.random.default_rng(0)
D, H = 3, 5  # input size, hidden size
Wx = rng.normal(0, 0.5, (D, H))
Wh = rng.normal(0, 0.5, (H, H))
b = rng.normal(0, 0.1, H)
print("the parameters:", {"Wx": Wx.shape, "Wh": Wh.shape, "b": b.shape})

# %% [markdown]
# ## One step, by hand
#
# The whole cell is one line. rnnkit's `rnn_step_forward` (the CS231n-style function of
# `rnnkit.cells.rnn`) computes the same thing and also returns what its backward needs.

# %%
def step(x, h_prev):
    return np.tanh(x @ Wx + h_prev @ Wh + b)  # h_t = tanh(x_t Wx + h_{t-1} Wh + b)


x1 = rng.normal(size=(2, D))  # one time step, a batch of N = 2
h0 = np.zeros((2, H))
h1 = step(x1, h0)
h1_rnnkit, _ = rnn_step_forward(x1, h0, Wx, Wh, b)
print("h1 =\n", h1.round(4))
print("relative error against rnn_step_forward:", rel_error(h1, h1_rnnkit))

# %% [markdown]
# ## Unrolled over sequences of different lengths
#
# Unrolling is a Python loop that calls the same `step` with the same weights. Four sequences of
# lengths 7, 5, 2 and 1 share one padded batch (T = 7, N = 4); each is run on its own to its own
# length, and its last hidden state is its summary.

# %%
lengths = np.array([7, 5, 2, 1])
T, N = int(lengths.max()), len(lengths)
x = rng.normal(size=(T, N, D))
x[np.arange(T)[:, None] >= lengths] = 0  # padding: never read

hand_out = np.zeros((T, N, H))  # outputs at the valid steps, zero at the padded ones
hand_last = np.zeros((N, H))
for n, L in enumerate(lengths):
    h = np.zeros((1, H))
    for t in range(L):  # the same step, the same Wx, Wh, b, L times
        h = step(x[t, n:n + 1], h)
        hand_out[t, n] = h[0]
    hand_last[n] = h[0]

# %% [markdown]
# ## The same with rnnkit's layer
#
# `rnnkit.RNN(D, H)` holds one `Wx`, `Wh`, `b` per layer (here one layer: `l0.`). A boolean mask
# (T, N) tells it which steps are real; at a padded step the state is carried unchanged, so the final
# state is each sequence's own last one.

# %%
layer = rnnkit.RNN(D, H, dtype=np.float64)
layer.load_state_dict({"l0.Wx": Wx, "l0.Wh": Wh, "l0.b": b})
print({name: p.shape for name, p in layer.params.items()})

mask = np.arange(T)[:, None] < lengths  # (T, N)
out, h_n = layer.forward(x, mask=mask)  # out (T, N, H), h_n (layers, N, H)
print("outputs, relative error:    ", rel_error(out * mask[..., None], hand_out))
print("final state, relative error:", rel_error(h_n[0], hand_last))

# %% [markdown]
# ## And with PyTorch
#
# `rnnkit.interop.to_torch_state_dict` writes the layer's weights in `nn.RNN`'s layout (PyTorch keeps
# `weight_ih` as (H, D) and two biases; rnnkit keeps `x @ Wx` with Wx (D, H) and one bias). PyTorch
# runs variable lengths as a packed sequence.

# %%
torch_rnn = torch.nn.RNN(D, H, dtype=torch.float64)
torch_rnn.load_state_dict({k: torch.from_numpy(v) for k, v in to_torch_state_dict(layer).items()})
packed = torch.nn.utils.rnn.pack_padded_sequence(torch.from_numpy(x), torch.from_numpy(lengths),
                                                 enforce_sorted=False)
with torch.no_grad():
    torch_out, torch_h = torch_rnn(packed)
torch_out, _ = torch.nn.utils.rnn.pad_packed_sequence(torch_out, total_length=T)
print("PyTorch vs hand,   outputs:    ", rel_error(torch_out.numpy(), hand_out))
print("PyTorch vs rnnkit, final state:", rel_error(torch_h.numpy(), h_n))

# %% [markdown]
# ## One set of weights, any length
#
# The number of parameters is D H + H H + H whatever T is: the same layer reads 10 steps or 1000.
# Below, the hidden state of one sequence of random input over time (each row one unit): the state is
# a running summary that every step rewrites with the same rule.

# %%
n_params = sum(p.size for p in layer.params.values())
print(f"parameters: {n_params} = D*H + H*H + H = {D * H + H * H + H}")
for T_long in (10, 100 if SMALL else 1000):
    out_long, _ = layer.forward(rng.normal(size=(T_long, 1, D)))
    print(f"T = {T_long:4d}: out {out_long.shape}, the same {n_params} parameters")

fig, ax = plt.subplots(figsize=(8, 2.2))
ax.imshow(out_long[:60, 0].T, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1)
ax.set_xlabel("time step t")
ax.set_ylabel("hidden unit")
ax.set_title("h_t of one sequence (60 steps): one rule applied again and again")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## The gradient agrees too
#
# Training needs the backward pass. A loss $L = \sum_t \langle h_t, g_t \rangle$ with a random
# upstream gradient $g$ (not all ones, which would hide a transposed index) is differentiated by
# rnnkit's hand-written BPTT and by PyTorch's autograd on the same weights.

# %%
g = rng.normal(size=(T, N, H)) * mask[..., None]
layer.zero_grad()  # backward adds into the gradients
layer.forward(x, mask=mask)
dx, _ = layer.backward(g)

xt = torch.from_numpy(x).requires_grad_()
out_t, _ = torch_rnn(xt)  # unpacked: the gradient is masked by g instead
(out_t * torch.from_numpy(g)).sum().backward()
mt = torch.from_numpy(mask[..., None])
print("dx, relative error:", rel_error(dx * mask[..., None], (xt.grad * mt).numpy()))
print("dWh, relative error:", rel_error(layer.grads["l0.Wh"], torch_rnn.weight_hh_l0.grad.numpy().T))
