"""Optimizers over (name, param, grad) triples, updating parameters in place.

Each follows `torch.optim`'s update rule (tested against it on identical parameter and gradient
sequences), so a recipe written for PyTorch behaves the same here. State is plain arrays and numbers, so
it goes into a checkpoint with no pickle.
"""

from __future__ import annotations

import math

import numpy as np

from rnnkit.backend import get_array_module, get_ops
from rnnkit.kernels import FlatKernel


def collect_params(*modules, **named_modules):
    """(name, param, grad) for every parameter of the given modules; keyword names prefix the names."""
    out = []
    for i, m in enumerate(modules):
        out.extend((f"{i}.{n}", p, g) for n, p, g in m.named_parameters())
    for prefix, m in named_modules.items():
        out.extend((f"{prefix}.{n}", p, g) for n, p, g in m.named_parameters())
    return out


class Optimizer:
    """Base: `params` is a list of (name, param, grad); `lr` may be changed between steps (schedules)."""

    state_names: tuple = ()  # per-parameter state arrays, e.g. ("m", "v") for Adam

    def __init__(self, params, lr):
        if lr < 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        self.params = list(params)
        names = [n for n, _, _ in self.params]
        if len(set(names)) != len(names):
            raise ValueError("parameter names must be unique")
        self.lr = lr
        self.step_count = 0
        self.state = {n: {k: np.zeros_like(p) for k in self.state_names} for n, p, _ in self.params}

    def zero_grad(self):
        for _, _, g in self.params:
            g[...] = 0

    def step(self):
        self.step_count += 1
        for name, p, g in self.params:
            self._update(p, g, self.state[name])

    def _update(self, p, g, s):
        raise NotImplementedError

    def state_dict(self):
        """{"scalars": {...}, "arrays": {"<param>/<state>": array}}: JSON + safetensors friendly."""
        arrays = {f"{n}/{k}": v for n, s in self.state.items() for k, v in s.items()}
        return {"scalars": {"lr": self.lr, "step_count": self.step_count, "type": type(self).__name__},
                "arrays": arrays}

    def load_state_dict(self, sd):
        sc = sd["scalars"]
        if sc.get("type") != type(self).__name__:
            raise ValueError(f"optimizer state is for {sc.get('type')}, not {type(self).__name__}")
        self.lr, self.step_count = float(sc["lr"]), int(sc["step_count"])
        for n, s in self.state.items():
            for k in s:
                key = f"{n}/{k}"
                if key not in sd["arrays"]:
                    raise ValueError(f"optimizer state has no {key}")
                s[k][...] = sd["arrays"][key]


class SGD(Optimizer):
    """p -= lr * g, with momentum (buf = mu buf + g) and Nesterov (g + mu buf) as options."""

    state_names = ("buf",)

    def __init__(self, params, lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params, lr)
        if nesterov and momentum <= 0:
            raise ValueError("nesterov needs momentum > 0")
        self.momentum, self.nesterov, self.weight_decay = momentum, nesterov, weight_decay

    def _update(self, p, g, s):
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.momentum:
            buf = s["buf"]
            if self.step_count == 1:
                buf[...] = g  # torch starts the buffer at the first gradient
            else:
                buf *= self.momentum
                buf += g
            g = g + self.momentum * buf if self.nesterov else buf
        p -= self.lr * g


class Adam(Optimizer):
    """Adam (Kingma and Ba 2015) in torch's arithmetic: p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps).

    `weight_decay` adds wd * p to the gradient (L2); `AdamW` decays the weights directly instead.
    """

    state_names = ("m", "v")
    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        self.b1, self.b2 = betas
        self.eps, self.weight_decay = eps, weight_decay

    def _update(self, p, g, s):
        wd = self.weight_decay
        # one compiled pass over each element (flat.c), or its NumPy reference `adam_update`
        get_ops(p, g).run(ADAM, p=p, g=g, m=s["m"], v=s["v"], b1=self.b1, b2=self.b2,
                          step=self.lr / (1 - self.b1**self.step_count),
                          sbc2=math.sqrt(1 - self.b2**self.step_count), eps=self.eps,
                          wd=0.0 if self.decoupled else wd,
                          decay=1 - self.lr * wd if self.decoupled else 1.0)


def adam_update(p, g, m, v, b1, b2, step, sbc2, eps, wd, decay):
    """Adam's update in place (torch's arithmetic; the reference of flat.c's `adam`):
        p *= decay                       decoupled weight decay (AdamW): decay = 1 - lr wd, else 1
        g += wd p                        L2 weight decay (Adam): wd, else 0
        m = b1 m + (1 - b1) g
        v = b2 v + (1 - b2) g^2
        p -= step * m / (sqrt(v) / sbc2 + eps)      step = lr / (1 - b1^t), sbc2 = sqrt(1 - b2^t)"""
    xp = get_array_module(p)
    if decay != 1:
        p *= decay
    if wd:
        g = g + wd * p
    m *= b1
    m += (1 - b1) * g
    v *= b2
    v += (1 - b2) * (g * g)
    p -= step * (m / (xp.sqrt(v) / sbc2 + eps))


ADAM = FlatKernel("adam", adam_update, lambda a: (a["p"].size, 1))


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov and Hutter 2019): p *= 1 - lr * wd before the step."""

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)


class RMSprop(Optimizer):
    """sq = alpha sq + (1 - alpha) g^2; p -= lr * g / (sqrt(sq) + eps), with momentum as an option."""

    state_names = ("sq", "buf")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, momentum=0.0, weight_decay=0.0):
        super().__init__(params, lr)
        self.alpha, self.eps, self.momentum, self.weight_decay = alpha, eps, momentum, weight_decay

    def _update(self, p, g, s):
        if self.weight_decay:
            g = g + self.weight_decay * p
        sq = s["sq"]
        sq *= self.alpha
        sq += (1 - self.alpha) * g * g
        step = g / (np.sqrt(sq) + self.eps)
        if self.momentum:
            buf = s["buf"]
            buf *= self.momentum
            buf += step
            step = buf
        p -= self.lr * step


class Adagrad(Optimizer):
    """acc += g^2; p -= lr / (1 + (t-1) lr_decay) * g / (sqrt(acc) + eps)."""

    state_names = ("acc",)

    def __init__(self, params, lr=1e-2, lr_decay=0.0, eps=1e-10, weight_decay=0.0,
                 initial_accumulator_value=0.0):
        super().__init__(params, lr)
        self.lr_decay, self.eps, self.weight_decay = lr_decay, eps, weight_decay
        for s in self.state.values():
            s["acc"][...] = initial_accumulator_value

    def _update(self, p, g, s):
        if self.weight_decay:
            g = g + self.weight_decay * p
        clr = self.lr / (1 + (self.step_count - 1) * self.lr_decay)
        s["acc"] += g * g
        p -= clr * g / (np.sqrt(s["acc"]) + self.eps)


def clip_grad_norm(params, max_norm):
    """Scale all gradients together so their global L2 norm is at most `max_norm` (as torch does).

    Returns the norm before clipping; exploding gradients (Pascanu et al. 2013) are what it is for.
    """
    total = math.sqrt(sum(float(np.vdot(g, g)) for _, _, g in params))
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        for _, _, g in params:
            g *= coef
    return total


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop, "adagrad": Adagrad}
