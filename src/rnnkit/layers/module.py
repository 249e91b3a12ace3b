"""`Module`: the one level above the stateless math that owns parameters and their gradients.

Each parameter has a gradient array of the same shape. `backward` adds into the gradients (so several
backward passes accumulate, as in truncated BPTT or gradient accumulation) and the caller zeroes them with
`zero_grad()` before a new update.
"""

from __future__ import annotations

import numpy as np


class Module:
    """Parameters in `self.params`, gradients in `self.grads` (same keys), child modules as attributes."""

    def __init__(self):
        object.__setattr__(self, "params", {})
        object.__setattr__(self, "grads", {})
        object.__setattr__(self, "_children", {})
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if isinstance(value, Module):
            self._children[name] = value
        object.__setattr__(self, name, value)

    def add_param(self, name, value):
        self.params[name] = value
        self.grads[name] = np.zeros_like(value)
        return value

    def named_parameters(self, prefix=""):
        """Yield (name, param, grad) for this module and every child, children after own parameters."""
        for name, p in self.params.items():
            yield prefix + name, p, self.grads[name]
        for cname, child in self._children.items():
            yield from child.named_parameters(prefix + cname + ".")

    def parameters(self):
        return [p for _, p, _ in self.named_parameters()]

    def num_parameters(self):
        return int(sum(p.size for p in self.parameters()))

    def zero_grad(self):
        for _, _, g in self.named_parameters():
            g[...] = 0

    def state_dict(self):
        return {name: p for name, p, _ in self.named_parameters()}

    def load_state_dict(self, state, strict=True):
        """Copy arrays into the parameters in place (so optimizers keep their references)."""
        own = {name: p for name, p, _ in self.named_parameters()}
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if strict and (missing or unexpected):
            raise ValueError(f"state_dict mismatch: missing {missing}, unexpected {unexpected}")
        for name, value in state.items():
            if name not in own:
                continue
            value = np.asarray(value)
            if value.shape != own[name].shape:
                raise ValueError(
                    f"parameter {name} has shape {own[name].shape}, got {value.shape} in the state_dict"
                )
            own[name][...] = value

    def train(self, mode=True):
        object.__setattr__(self, "training", mode)
        for child in self._children.values():
            child.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def astype(self, dtype):
        """Convert every parameter (and gradient) to `dtype` in place of the old arrays."""
        for m in self._modules():
            for k in list(m.params):
                m.params[k] = m.params[k].astype(dtype)
                m.grads[k] = np.zeros_like(m.params[k])
        return self

    def _modules(self):
        yield self
        for child in self._children.values():
            yield from child._modules()
