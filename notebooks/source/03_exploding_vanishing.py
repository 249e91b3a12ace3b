# %% [markdown]
# # 3. Exploding and vanishing gradients, and clipping
#
# *Follows section 3 of the lecture guide ("the gradient problem" of long sequences) and the start of
# section 4 ("vanishing gradient").*
#
# Back through time, the gradient is multiplied at every step by the step's Jacobian
# $\partial h_t / \partial h_{t-1} = \mathrm{diag}(1 - h_t^2)\, W_h^\top$. A product of T such factors
# shrinks geometrically when they are small (vanishing: the far past gets no gradient) and grows
# geometrically when they are large (exploding: one update throws the weights away). This notebook
#
# 1. measures $\lVert \partial L / \partial h_t \rVert$ for a loss at the last step, against the lag
#    $T - t$, for the vanilla RNN and the LSTM (`rnnkit.diagnostics.gradient_flow`, from the same
#    hand-written BPTT the layers train with);
# 2. shows how the scale of $W_h$ moves the vanilla RNN between vanishing and exploding;
# 3. trains a vanilla RNN on the adding problem in its exploding regime with and without gradient-norm
#    clipping (`rnnkit.optim.clip_grad_norm`, Pascanu et al. 2013).

# %%
import math
import os

import matplotlib.pyplot as plt
import numpy as np

import rnnkit
from rnnkit.data.synthetic import adding_batch
from rnnkit.diagnostics import gradient_flow
from rnnkit.models.memory import MemoryConfig, MemoryModel
from rnnkit.optim import SGD, clip_grad_norm, collect_params

SMALL = os.environ.get("RNNKIT_NOTEBOOK_SMALL") == "1"  # the quick setting CI runs
rng = np.random.default_rng(0)

# %% [markdown]
# ## Gradient flow through time: RNN against LSTM
#
# Both layers have their default initialisation (the LSTM's forget-gate bias at 1, so its forget gate
# starts mostly open). The input is random; the loss reads only the last output, through a random
# projection. Untrained, the LSTM's gradient decays too, but per step by its forget gate (about
# sigmoid(1) = 0.73 here), which training can open towards 1; the vanilla RNN's decays by
# tanh' times W_h, which no bias can hold at 1.

# %%
T, N, D, H = (100 if SMALL else 300), 16, 8, 64
x = rng.normal(size=(T, N, D))
proj = rng.normal(size=(N, H))
flows = {}
for name, layer in [("RNN (tanh)", rnnkit.RNN(D, H, seed=0)),
                    ("LSTM", rnnkit.LSTM(D, H, seed=0, forget_bias=1.0))]:
    flows[name] = gradient_flow(layer, x, lambda out_last: proj)  # float64 inside

fig, ax = plt.subplots(figsize=(7, 3.5))
for name, f in flows.items():
    ax.semilogy(f["lag"], f["layers"][0]["dh"], label=f"{name}: dL/dh")
    if "dc" in f["layers"][0]:
        ax.semilogy(f["lag"], f["layers"][0]["dc"], "--", label=f"{name}: dL/dc (cell state)")
ax.set_xlabel("lag T - t (steps back from the loss)")
ax.set_ylabel("mean ||dL/dh_t||")
ax.set_title("both decay geometrically at initialisation, the vanilla RNN's far faster")
ax.legend()
plt.tight_layout()
plt.show()
for name, f in flows.items():
    dh = f["layers"][0]["dh"]
    print(f"{name:11s} ||dL/dh|| at lag 0: {dh[-1]:.2e}, at lag 50: {dh[-51]:.2e}, at lag {T}: {dh[0]:.2e}")

# %% [markdown]
# ## The scale of $W_h$ decides
#
# The same vanilla RNN with $W_h$ rescaled to spectral radius $\rho$ (its largest eigenvalue's
# modulus). Below 1 every step shrinks the gradient. Above 1 the linear part grows it, and tanh's
# derivative (below 1 wherever a unit is away from 0) pulls it back: at rho = 1.5 the two nearly
# balance here, at rho = 3 the gradient explodes.

# %%
fig, ax = plt.subplots(figsize=(7, 3.5))
for rho in (0.5, 0.9, 1.5, 3.0):
    layer = rnnkit.RNN(D, H, seed=0)
    W = layer.params["l0.Wh"]
    W[...] = W * (rho / np.max(np.abs(np.linalg.eigvals(W))))
    f = gradient_flow(layer, x, lambda out_last: proj)
    ax.semilogy(f["lag"], f["layers"][0]["dh"], label=f"rho = {rho}")
ax.set_xlabel("lag T - t")
ax.set_ylabel("mean ||dL/dh_t||")
ax.set_title("vanilla RNN, W_h scaled to spectral radius rho")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Clipping at work
#
# The adding problem (Hochreiter and Schmidhuber 1997): each step gives a random value and a marker
# bit; the answer, read at the last step, is the sum of the two marked values. A model with no memory
# predicts the mean and scores a mean squared error of 0.167.
#
# A vanilla RNN with $W_h$ at spectral radius 2 and plain SGD: the loss surface has cliffs, and a step
# off one multiplies the gradient by millions. `clip_grad_norm(params, 1.0)` rescales the gradient of
# all parameters together when its norm passes 1, keeping the direction and bounding the step. Both
# runs see the same batches from the same initial weights.

# %%
T_add, steps = 50, (120 if SMALL else 300)


def train(clip):
    model = MemoryModel(MemoryConfig(task="adding", cell="rnn", length=T_add, hidden=32, seed=0))
    W = model.rnn.params["l0.Wh"]
    W[...] = W * (2.0 / np.max(np.abs(np.linalg.eigvals(W))))
    params = collect_params(model=model)  # (name, parameter, gradient) triples
    opt = SGD(params, lr=0.05)
    data = np.random.default_rng(0)
    losses, norms = [], []
    for _ in range(steps):
        x, y = adding_batch(64, T_add, data, dtype=np.float64)
        opt.zero_grad()
        with np.errstate(over="ignore", invalid="ignore"):
            loss, dpred = model.loss(x, y)
            model.backward(dpred)
        if clip:
            norm = clip_grad_norm(params, clip)  # the norm before clipping
        else:
            norm = math.sqrt(sum(float(np.vdot(g, g)) for _, _, g in params))
        losses.append(loss)
        norms.append(norm)
        if not (math.isfinite(loss) and math.isfinite(norm)):
            break  # the weights would become inf: this run is over
        opt.step()
    return np.array(losses), np.array(norms)


runs = {"no clipping": train(0), "clip_grad_norm(params, 1.0)": train(1.0)}
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
for name, (losses, norms) in runs.items():
    axes[0].semilogy(losses, label=name)
    axes[1].semilogy(norms, label=name)
axes[0].axhline(0.167, color="gray", ls=":", label="no memory (0.167)")
axes[0].set_title("training loss (MSE)")
axes[1].set_title("gradient norm before clipping")
for ax in axes:
    ax.set_xlabel("update")
    ax.legend(fontsize=8)
plt.tight_layout()
plt.show()
for name, (losses, norms) in runs.items():
    print(f"{name:28s} last 50 updates: mean loss {np.mean(losses[-50:]):.3g}, "
          f"largest gradient norm {np.max(norms):.3g}")

# %% [markdown]
# Clipping fixes exploding gradients only: it bounds each step, it does not bring back a gradient that
# has vanished. For that the cell itself has to change, which is the LSTM's answer (notebook 4) and,
# differently, the linear recurrences' (notebook 6).
