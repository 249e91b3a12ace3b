# %% [markdown]
# # 4. The LSTM's gates on real text
#
# *Follows section 4 of the lecture guide, "the LSTM: a smart memory manager" (cell state, forget,
# input and output gates).*
#
# $$\begin{aligned}
# i_t, f_t, o_t &= \sigma(x_t W_x + h_{t-1} W_h + b)_{i,f,o}, \qquad g_t = \tanh(\cdot)_g \\
# c_t &= f_t \odot c_{t-1} + i_t \odot g_t \qquad \text{(the cell state: the conveyor belt)} \\
# h_t &= o_t \odot \tanh(c_t)
# \end{aligned}$$
#
# This notebook trains a small character-level LSTM language model (char-rnn) on tinyshakespeare with
# truncated BPTT, then opens it up: the gates' values over a passage, how often each is shut or open,
# and one cell-state unit that tracks something in the text (here: where we are within a line), found
# by correlation and shown on the text itself, as in Karpathy, Johnson and Fei-Fei's "Visualizing and
# understanding recurrent networks" (2015).

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import HTML, display

from rnnkit.data import CharVocab, read_text, split_ids
from rnnkit.diagnostics import activations
from rnnkit.functional import softmax_cross_entropy
from rnnkit.models.lm import CharLM, LMConfig, evaluate_stream, sample
from rnnkit.optim import Adam, clip_grad_norm, collect_params

SMALL = os.environ.get("RNNKIT_NOTEBOOK_SMALL") == "1"  # the quick setting CI runs
# the lecture's data: $RNNKIT_DATA, else ../shared/data beside the repository (notebooks run in notebooks/)
DATA = Path(os.environ.get("RNNKIT_DATA", Path.cwd().parent.parent / "shared" / "data"))

text = read_text(DATA / "tinyshakespeare" / "input.txt")
vocab = CharVocab.from_text(text)
train_ids, val_ids = split_ids(vocab.encode(text), 0.1)  # the last 10% for validation
print(f"{len(text):,} characters, a vocabulary of {len(vocab)}; {len(train_ids):,} for training")
print(text[:200])

# %% [markdown]
# ## Training with truncated BPTT
#
# The training text is cut into N parallel streams; each update reads the next T characters of every
# stream, predicts each next character, and back-propagates through those T steps only. The final
# state is handed to the next chunk (notebook 2), so the model keeps reading each stream's history.

# %%
N, T = 32, 64
steps = 250 if SMALL else 1500
model = CharLM(LMConfig(vocab_size=len(vocab), cell="lstm", embed=32, hidden=128, layers=1, seed=0))
params = collect_params(model=model)
opt = Adam(params, lr=3e-3)
streams = train_ids[: len(train_ids) // N * N].reshape(N, -1).T  # (length, N): column n is stream n

state, pos, losses = None, 0, []
for it in range(steps):
    if pos + T + 1 > len(streams):  # the end of the text: start the streams over, from a zero state
        state, pos = None, 0
    chunk = streams[pos:pos + T + 1]
    pos += T
    logits, state = model.forward(chunk[:-1], state)  # (T, N, V); the state is carried, not differentiated
    loss, dlogits = softmax_cross_entropy(logits, chunk[1:])
    opt.zero_grad()
    model.backward(dlogits)
    clip_grad_norm(params, 5.0)
    opt.step()
    losses.append(loss)

val = evaluate_stream(model, val_ids[:20000])
print(f"{steps} updates; validation {val['val_loss']:.3f} nats/char ({val['bits_per_char']:.2f} bits); "
      f"a uniform guess is {np.log(len(vocab)):.2f} nats")
fig, ax = plt.subplots(figsize=(6, 2.5))
ax.plot(np.convolve(losses, np.ones(20) / 20, mode="valid"))
ax.set_xlabel("update")
ax.set_ylabel("training loss (nats/char)")
plt.tight_layout()
plt.show()
model.eval()
prime = vocab.encode("ROMEO:\n")
print("ROMEO:\n" + vocab.decode(list(sample(model, prime, 300, temperature=0.7,
                                             rng=np.random.default_rng(0)))))

# %% [markdown]
# ## The gates over a passage
#
# `rnnkit.diagnostics.activations(rnn, x)` runs the trained layer's own forward over the embedded
# passage and returns every named array of the cell: its state parts (`h`, `c`) and its gates, each
# (T, N, H). Below, the first 32 units over 120 characters.

# %%
passage = val_ids[1000:1000 + (1500 if SMALL else 4000)]
x = model.embed.params["W"][passage][:, None, :]  # (T, 1, E): one stream
acts = dict(activations(model.rnn, x.astype(np.float64)))["layer 0"]
print({k: v.shape for k, v in acts.items()})

show = slice(0, 120)
fig, axes = plt.subplots(4, 1, figsize=(11, 6.5), sharex=True)
for ax, (name, title) in zip(axes, [("i", "input gate i"), ("f", "forget gate f"),
                                      ("o", "output gate o"), ("c", "cell state c")]):
    v = acts[name][show, 0, :32].T
    ax.imshow(v, aspect="auto", cmap="viridis" if name != "c" else "RdBu_r",
              vmin=0 if name != "c" else -3, vmax=1 if name != "c" else 3)
    ax.set_ylabel(title, fontsize=8)
chars = vocab.decode(passage[show])
axes[-1].set_xticks(range(len(chars)))
axes[-1].set_xticklabels([{"\n": "\u21b5", " ": "\u2423"}.get(ch, ch) for ch in chars], fontsize=6)
plt.tight_layout()
plt.show()

# %% [markdown]
# How often is each gate saturated? A gate below 0.1 is shut, above 0.9 open. The forget gate spends
# much of its time open: the cell state is kept from step to step unless there is a reason to drop it.

# %%
for name in ("i", "f", "o"):
    v = acts[name]
    print(f"{name}: mean {v.mean():.2f}, shut (< 0.1) {np.mean(v < 0.1):5.1%}, "
          f"open (> 0.9) {np.mean(v > 0.9):5.1%}")
fig, ax = plt.subplots(figsize=(6, 2.5))
for name in ("i", "f", "o"):
    ax.hist(acts[name].ravel(), bins=40, range=(0, 1), histtype="step", density=True, label=name)
ax.set_xlabel("gate value")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## A unit that tracks where it is in the line
#
# Nothing told the model about lines, yet to predict a newline it must know how far the current line
# has run. For each cell-state unit, the correlation of its value with the position within the line
# (characters since the last newline) over the passage; the unit with the largest |correlation| is
# shown, first as a curve, then colouring the text itself (red: positive, blue: negative).

# %%
c = acts["c"][:, 0, :]  # (T, H)
ptext = vocab.decode(passage)
position = np.zeros(len(ptext))
for t in range(1, len(ptext)):
    position[t] = 0 if ptext[t - 1] == "\n" else position[t - 1] + 1
corr = np.array([np.corrcoef(c[:, j], position)[0, 1] if c[:, j].std() > 0 else 0.0
                 for j in range(c.shape[1])])
unit = int(np.argmax(np.abs(corr)))
print(f"unit {unit}: correlation {corr[unit]:+.2f} with the position in the line "
      f"(the median |correlation| over all {c.shape[1]} units is {np.median(np.abs(corr)):.2f})")

fig, ax = plt.subplots(figsize=(11, 2.6))
span = slice(0, 300)
ax.plot(c[span, unit], label=f"c[{unit}]")
ax2 = ax.twinx()
ax2.plot(position[span], color="gray", alpha=0.5, label="position in line")
ax.set_xlabel("character")
ax.set_ylabel(f"cell unit {unit}")
ax2.set_ylabel("position in line")
ax.set_title("the unit against the position in the line")
plt.tight_layout()
plt.show()


def colour_text(chars, values):
    """HTML: each character on a background from blue (-1) through white to red (+1)."""
    out = []
    for ch, v in zip(chars, values):
        v = float(np.clip(v, -1, 1))
        r, g, b = (255, int(255 * (1 - v)), int(255 * (1 - v))) if v > 0 else \
            (int(255 * (1 + v)), int(255 * (1 + v)), 255)
        out.append(f'<span style="background:rgb({r},{g},{b})">{"<br>" if ch == chr(10) else ch}</span>')
    return '<div style="font-family:monospace;line-height:1.5">' + "".join(out) + "</div>"


v = c[:600, unit]
display(HTML(colour_text(ptext[:600], v / (np.abs(v).max() + 1e-9))))
