"""PyTorch references for rnnkit's Mamba cell: what it is tested and benchmarked against.

Copied or transcribed from the reference code, with the source of each named beside it:
    state-spaces/mamba (Apache-2.0, Copyright (c) 2023 Tri Dao, Albert Gu):
        mamba_ssm/ops/selective_scan_interface.py  selective_scan_ref
        mamba_ssm/modules/mamba_simple.py          Mamba.forward (the slow path, no causal_conv1d)
                                                   and Mamba.step (no causal_conv1d, no Triton)
        mamba_ssm/ops/triton/layer_norm.py         rms_norm_ref
    alxndrTL/mamba.py (MIT, Copyright (c) 2024 Alexandre TL):
        mambapy/pscan.py                           npo2, pad_npo2, PScan (Blelloch scan with its
                                                   hand-written backward)
        mambapy/mamba.py                           MambaBlock.selective_scan / selective_scan_seq

Layouts: `selective_scan_ref` keeps mamba_ssm's batch-major (B, E, L) arrays and the mambapy scans
their (B, L, E); `mamba_layer` and `mamba_step` speak rnnkit's time-major convention:

    x (T, N, D) -> out (T, N, H); state (conv (N, K-1, E), ssm (N, E, S))
    params: norm (D,), W_in (D, 2E), conv_w (K, E), conv_b (E,), W_x (E, R+2S), W_dt (R, E),
            b_dt (E,), A_log (E, S), skip (E,), W_out (E, H)
    PyTorch's modules hold the transposes: in_proj.weight = W_in.T, conv1d.weight (E, 1, K) =
    conv_w.T[:, None, :], x_proj.weight = W_x.T, dt_proj.weight = W_dt.T, out_proj.weight = W_out.T

Where the originals call `.float()` the functions here keep float64 (`_float`): the originals upcast
half precision to float32, and keeping float64 lets the self-checks compare at 1e-12. einops'
rearrange/repeat are written out as reshape/permute (the package is not a test dependency), each
with the original pattern in a comment.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def _float(t):
    return t if t.dtype == torch.float64 else t.float()


# --- state-spaces/mamba, mamba_ssm/ops/triton/layer_norm.py: rms_norm_ref (no dropout, residual,
# rowscale or second weight: Block's RMSNorm uses none of them) ---------------------------------

def rms_norm_ref(x, weight, bias, eps=1e-6, upcast=False):
    dtype = x.dtype
    if upcast:
        x = _float(x)
        weight = _float(weight)
        bias = _float(bias) if bias is not None else None
    rstd = 1 / torch.sqrt((x.square()).mean(dim=-1, keepdim=True) + eps)
    out = ((x * rstd * weight) + bias if bias is not None else (x * rstd * weight)).to(dtype)
    return out


# --- state-spaces/mamba, mamba_ssm/ops/selective_scan_interface.py: selective_scan_ref ----------

def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       return_last_state=False, *, h0=None):
    """
    u: r(B D L)
    delta: r(B D L)
    A: c(D N) or r(D N)
    B: c(D N) or r(B N L) or r(B N 2L) or r(B G N L) or (B G N L)
    C: c(D N) or r(B N L) or r(B N 2L) or r(B G N L) or (B G N L)
    D: r(D)
    z: r(B D L)
    delta_bias: r(D), fp32
    h0: r(B D N) or c(B D N), the state before the first step; None: zeros. Added here: the original
        always starts from zero, and rnnkit's cell takes an initial state.

    out: r(B D L)
    last_state (optional): r(B D dstate) or c(B D dstate)
    """
    dtype_in = u.dtype
    u = _float(u)
    delta = _float(delta)
    if delta_bias is not None:
        delta = delta + _float(delta_bias[..., None])
    if delta_softplus:
        delta = F.softplus(delta)
    batch, dim, dstate = u.shape[0], A.shape[0], A.shape[1]
    is_variable_B = B.dim() >= 3
    is_variable_C = C.dim() >= 3
    if A.is_complex():
        # rearrange(B.float(), "... (L two) -> ... L two", two=2)
        if is_variable_B:
            B = torch.view_as_complex(_float(B).reshape(*B.shape[:-1], -1, 2).contiguous())
        if is_variable_C:
            C = torch.view_as_complex(_float(C).reshape(*C.shape[:-1], -1, 2).contiguous())
    else:
        B = _float(B)
        C = _float(C)
    x = A.new_zeros((batch, dim, dstate)) if h0 is None else h0.to(A.dtype)
    ys = []
    deltaA = torch.exp(torch.einsum('bdl,dn->bdln', delta, A))
    if not is_variable_B:
        deltaB_u = torch.einsum('bdl,dn,bdl->bdln', delta, B, u)
    else:
        if B.dim() == 3:
            deltaB_u = torch.einsum('bdl,bnl,bdl->bdln', delta, B, u)
        else:
            # repeat(B, "B G N L -> B (G H) N L", H=dim // B.shape[1])
            B = B.repeat_interleave(dim // B.shape[1], dim=1)
            deltaB_u = torch.einsum('bdl,bdnl,bdl->bdln', delta, B, u)
    if is_variable_C and C.dim() == 4:
        C = C.repeat_interleave(dim // C.shape[1], dim=1)
    last_state = None
    for i in range(u.shape[2]):
        x = deltaA[:, :, i] * x + deltaB_u[:, :, i]
        if not is_variable_C:
            y = torch.einsum('bdn,dn->bd', x, C)
        else:
            if C.dim() == 3:
                y = torch.einsum('bdn,bn->bd', x, C[:, :, i])
            else:
                y = torch.einsum('bdn,bdn->bd', x, C[:, :, :, i])
        if i == u.shape[2] - 1:
            last_state = x
        if y.is_complex():
            y = y.real * 2
        ys.append(y)
    y = torch.stack(ys, dim=2)  # (batch dim L)
    out = y if D is None else y + u * D[:, None]  # rearrange(D, "d -> d 1")
    if z is not None:
        out = out * F.silu(z)
    out = out.to(dtype=dtype_in)
    return out if not return_last_state else (out, last_state)


# --- alxndrTL/mamba.py, mambapy/pscan.py (verbatim but for comments) -----------------------------
# An implementation of the parallel scan operation in PyTorch (Blelloch version); its docs/pscan.ipynb
# explains the steps.

def npo2(len):
    """
    Returns the next power of 2 above len
    """

    return 2 ** math.ceil(math.log2(len))


def pad_npo2(X):
    """
    Pads input length dim to the next power of 2

    Args:
        X : (B, L, D, N)

    Returns:
        Y : (B, npo2(L), D, N)
    """

    len_npo2 = npo2(X.size(1))
    pad_tuple = (0, 0, 0, 0, 0, len_npo2 - X.size(1))
    return F.pad(X, pad_tuple, "constant", 0)


class PScan(torch.autograd.Function):
    @staticmethod
    def pscan(A, X):
        # A : (B, D, L, N)
        # X : (B, D, L, N)

        # modifies X in place by doing a parallel scan.
        # more formally, X will be populated by these values :
        # H[t] = A[t] * H[t-1] + X[t] with H[0] = 0
        # which are computed in parallel (2*log2(T) sequential steps (ideally), instead of T
        # sequential steps)

        # only supports L that is a power of two (mainly for a clearer code)

        B, D, L, _ = A.size()
        num_steps = int(math.log2(L))

        # up sweep (last 2 steps unfolded)
        Aa = A
        Xa = X
        for _ in range(num_steps-2):
            T = Xa.size(2)
            Aa = Aa.view(B, D, T//2, 2, -1)
            Xa = Xa.view(B, D, T//2, 2, -1)

            Xa[:, :, :, 1].add_(Aa[:, :, :, 1].mul(Xa[:, :, :, 0]))
            Aa[:, :, :, 1].mul_(Aa[:, :, :, 0])

            Aa = Aa[:, :, :, 1]
            Xa = Xa[:, :, :, 1]

        # we have only 4, 2 or 1 nodes left
        if Xa.size(2) == 4:
            Xa[:, :, 1].add_(Aa[:, :, 1].mul(Xa[:, :, 0]))
            Aa[:, :, 1].mul_(Aa[:, :, 0])

            Xa[:, :, 3].add_(Aa[:, :, 3].mul(Xa[:, :, 2] + Aa[:, :, 2].mul(Xa[:, :, 1])))
        elif Xa.size(2) == 2:
            Xa[:, :, 1].add_(Aa[:, :, 1].mul(Xa[:, :, 0]))
            return
        else:
            return

        # down sweep (first 2 steps unfolded)
        Aa = A[:, :, 2**(num_steps-2)-1:L:2**(num_steps-2)]
        Xa = X[:, :, 2**(num_steps-2)-1:L:2**(num_steps-2)]
        Xa[:, :, 2].add_(Aa[:, :, 2].mul(Xa[:, :, 1]))
        Aa[:, :, 2].mul_(Aa[:, :, 1])

        for k in range(num_steps-3, -1, -1):
            Aa = A[:, :, 2**k-1:L:2**k]
            Xa = X[:, :, 2**k-1:L:2**k]

            T = Xa.size(2)
            Aa = Aa.view(B, D, T//2, 2, -1)
            Xa = Xa.view(B, D, T//2, 2, -1)

            Xa[:, :, 1:, 0].add_(Aa[:, :, 1:, 0].mul(Xa[:, :, :-1, 1]))
            Aa[:, :, 1:, 0].mul_(Aa[:, :, :-1, 1])

    @staticmethod
    def pscan_rev(A, X):
        # A : (B, D, L, N)
        # X : (B, D, L, N)

        # the same function as above, but in reverse
        # (if you flip the input, call pscan, then flip the output, you get what this function
        # outputs)
        # it is used in the backward pass

        # only supports L that is a power of two (mainly for a clearer code)

        B, D, L, _ = A.size()
        num_steps = int(math.log2(L))

        # up sweep (last 2 steps unfolded)
        Aa = A
        Xa = X
        for _ in range(num_steps-2):
            T = Xa.size(2)
            Aa = Aa.view(B, D, T//2, 2, -1)
            Xa = Xa.view(B, D, T//2, 2, -1)

            Xa[:, :, :, 0].add_(Aa[:, :, :, 0].mul(Xa[:, :, :, 1]))
            Aa[:, :, :, 0].mul_(Aa[:, :, :, 1])

            Aa = Aa[:, :, :, 0]
            Xa = Xa[:, :, :, 0]

        # we have only 4, 2 or 1 nodes left
        if Xa.size(2) == 4:
            Xa[:, :, 2].add_(Aa[:, :, 2].mul(Xa[:, :, 3]))
            Aa[:, :, 2].mul_(Aa[:, :, 3])

            Xa[:, :, 0].add_(Aa[:, :, 0].mul(Xa[:, :, 1].add(Aa[:, :, 1].mul(Xa[:, :, 2]))))
        elif Xa.size(2) == 2:
            Xa[:, :, 0].add_(Aa[:, :, 0].mul(Xa[:, :, 1]))
            return
        else:
            return

        # down sweep (first 2 steps unfolded)
        Aa = A[:, :, 0:L:2**(num_steps-2)]
        Xa = X[:, :, 0:L:2**(num_steps-2)]
        Xa[:, :, 1].add_(Aa[:, :, 1].mul(Xa[:, :, 2]))
        Aa[:, :, 1].mul_(Aa[:, :, 2])

        for k in range(num_steps-3, -1, -1):
            Aa = A[:, :, 0:L:2**k]
            Xa = X[:, :, 0:L:2**k]

            T = Xa.size(2)
            Aa = Aa.view(B, D, T//2, 2, -1)
            Xa = Xa.view(B, D, T//2, 2, -1)

            Xa[:, :, :-1, 1].add_(Aa[:, :, :-1, 1].mul(Xa[:, :, 1:, 0]))
            Aa[:, :, :-1, 1].mul_(Aa[:, :, 1:, 0])

    @staticmethod
    def forward(ctx, A_in, X_in):
        """
        Applies the parallel scan operation, as defined above. Returns a new tensor.
        If you can, privilege sequence lengths that are powers of two.

        Args:
            A_in : (B, L, D, N)
            X_in : (B, L, D, N)

        Returns:
            H : (B, L, D, N)
        """

        L = X_in.size(1)

        # cloning is requiered because of the in-place ops
        if L == npo2(L):
            A = A_in.clone()
            X = X_in.clone()
        else:
            # pad tensors (and clone btw)
            A = pad_npo2(A_in)  # (B, npo2(L), D, N)
            X = pad_npo2(X_in)  # (B, npo2(L), D, N)

        # prepare tensors
        A = A.transpose(2, 1)  # (B, D, npo2(L), N)
        X = X.transpose(2, 1)  # (B, D, npo2(L), N)

        # parallel scan (modifies X in-place)
        PScan.pscan(A, X)

        ctx.save_for_backward(A_in, X)

        # slice [:, :L] (cut if there was padding)
        return X.transpose(2, 1)[:, :L]

    @staticmethod
    def backward(ctx, grad_output_in):
        """
        Flows the gradient from the output to the input. Returns two new tensors.

        Args:
            ctx : A_in : (B, L, D, N), X : (B, D, L, N)
            grad_output_in : (B, L, D, N)

        Returns:
            gradA : (B, L, D, N), gradX : (B, L, D, N)
        """

        A_in, X = ctx.saved_tensors

        L = grad_output_in.size(1)

        # cloning is requiered because of the in-place ops
        if L == npo2(L):
            grad_output = grad_output_in.clone()
            # the next padding will clone A_in
        else:
            grad_output = pad_npo2(grad_output_in)  # (B, npo2(L), D, N)
            A_in = pad_npo2(A_in)  # (B, npo2(L), D, N)

        # prepare tensors
        grad_output = grad_output.transpose(2, 1)
        A_in = A_in.transpose(2, 1)  # (B, D, npo2(L), N)
        # shift 1 to the left (see hand derivation)
        A = torch.nn.functional.pad(A_in[:, :, 1:], (0, 0, 0, 1))  # (B, D, npo2(L), N)

        # reverse parallel scan (modifies grad_output in-place)
        PScan.pscan_rev(A, grad_output)

        Q = torch.zeros_like(X)
        Q[:, :, 1:].add_(X[:, :, :-1] * grad_output[:, :, 1:])

        return Q.transpose(2, 1)[:, :L], grad_output.transpose(2, 1)[:, :L]


pscan = PScan.apply


# --- alxndrTL/mamba.py, mambapy/mamba.py: MambaBlock.selective_scan and selective_scan_seq -------
# Methods there, functions here (the only attribute they read, config.d_inner/d_state, comes from A).
# h0 and return_last_state are added (the original starts from zero and returns y only): pscan has
# no initial state, so h0 is folded into the first step's input, A_1 h0 + BX_1, which is exact.

def selective_scan_pscan(x, delta, A, B, C, D, *, h0=None, return_last_state=False):
    # x : (B, L, ED)
    # Δ : (B, L, ED)
    # A : (ED, N)
    # B : (B, L, N)
    # C : (B, L, N)
    # D : (ED)
    # h0 : (B, ED, N) or None

    # y : (B, L, ED)

    deltaA = torch.exp(delta.unsqueeze(-1) * A)  # (B, L, ED, N)
    deltaB = delta.unsqueeze(-1) * B.unsqueeze(2)  # (B, L, ED, N)

    BX = deltaB * (x.unsqueeze(-1))  # (B, L, ED, N)
    if h0 is not None:
        BX = torch.cat([BX[:, :1] + deltaA[:, :1] * h0.unsqueeze(1), BX[:, 1:]], dim=1)

    hs = pscan(deltaA, BX)

    y = (hs @ C.unsqueeze(-1)).squeeze(3)  # (B, L, ED, N) @ (B, L, N, 1) -> (B, L, ED, 1)

    y = y + D * x

    return (y, hs[:, -1]) if return_last_state else y


def selective_scan_seq(x, delta, A, B, C, D, *, h0=None, return_last_state=False):
    # shapes as selective_scan_pscan

    _, L, _ = x.shape

    deltaA = torch.exp(delta.unsqueeze(-1) * A)  # (B, L, ED, N)
    deltaB = delta.unsqueeze(-1) * B.unsqueeze(2)  # (B, L, ED, N)

    BX = deltaB * (x.unsqueeze(-1))  # (B, L, ED, N)

    if h0 is None:
        # the original allocates the default dtype (float32); deltaA's keeps float64 runs float64
        h = torch.zeros(x.size(0), A.shape[0], A.shape[1], device=deltaA.device,
                        dtype=deltaA.dtype)  # (B, ED, N)
    else:
        h = h0
    hs = []

    for t in range(0, L):
        h = deltaA[:, t] * h + BX[:, t]
        hs.append(h)

    hs = torch.stack(hs, dim=1)  # (B, L, ED, N)

    y = (hs @ C.unsqueeze(-1)).squeeze(3)  # (B, L, ED, N) @ (B, L, N, 1) -> (B, L, ED, 1)

    y = y + D * x

    return (y, hs[:, -1]) if return_last_state else y


# --- the block in rnnkit's layout -----------------------------------------------------------------

def _sizes(p):
    K, E = p["conv_w"].shape
    return K, E, p["A_log"].shape[1], p["W_dt"].shape[0]


def mamba_layer(x, params, conv_state=None, ssm_state=None, residual=True, eps=1e-5, scan="ref"):
    """One Mamba block, time-major: x (T, N, D) -> (out (T, N, H), final conv state (N, K-1, E),
    final ssm state (N, E, S)).

    RMSNorm (rms_norm_ref, as Block applies it before the mixer), then Mamba.forward's slow path
    (causal_conv1d absent, inference_params None), then the residual x + out when `residual` and
    D == H (Block's pre-norm residual; rnnkit's cell adds it exactly when D == H).

    The one change to Mamba.forward: its conv1d pads K-1 zeros on both sides and keeps the first T
    outputs, so it always starts from zeros; here `conv_state` (the K-1 inputs before the sequence,
    oldest first) is prepended and the convolution runs unpadded, which is the same arithmetic when
    the state is zero (None runs the original padded form). The final conv state is the last K-1
    of [conv_state, xi]: Mamba.forward's inference cache instead keeps the last K of xi (zero-padded
    on the left when T < K, dropping the earlier state).

    scan: "ref" selective_scan_ref (softplus and the z gate inside, as the slow path calls it);
    "pscan" / "seq" mambapy's selective_scan / selective_scan_seq, with softplus(dt + b_dt) applied
    before and y * silu(z) after, as mambapy's MambaBlock does.
    """
    p = params
    T, N, Din = x.shape
    K, E, S, R = _sizes(p)
    hidden_states = x.transpose(0, 1)  # (N, T, D): mamba_ssm is batch-major
    u = rms_norm_ref(hidden_states, p["norm"], None, eps=eps)

    # We do matmul and transpose BLH -> HBL at the same time (mamba_simple.py)
    # rearrange(in_proj.weight @ rearrange(u, "b l d -> d (b l)"), "d (b l) -> b d l", l=T)
    xz = (p["W_in"].t() @ u.reshape(N * T, Din).t()).reshape(2 * E, N, T).permute(1, 0, 2)
    A = -torch.exp(_float(p["A_log"]))  # (d_inner, d_state)
    xi, z = xz.chunk(2, dim=1)
    conv_weight = p["conv_w"].t()[:, None, :]  # conv1d.weight (E, 1, K)
    if conv_state is None:
        xc = F.conv1d(xi, conv_weight, p["conv_b"], padding=K - 1, groups=E)[..., :T]
        window = F.pad(xi, (K - 1, 0))
    else:
        window = torch.cat([conv_state.permute(0, 2, 1).to(xi.dtype), xi], dim=-1)
        xc = F.conv1d(window, conv_weight, p["conv_b"], groups=E)
    final_conv = window[..., T:].permute(0, 2, 1)  # (N, K-1, E)
    xs = F.silu(xc)

    # rearrange(xs, "b d l -> (b l) d")
    x_dbl = F.linear(xs.permute(0, 2, 1).reshape(N * T, E), p["W_x"].t())  # (bl d)
    dt, B, C = torch.split(x_dbl, [R, S, S], dim=-1)
    dt = p["W_dt"].t() @ dt.t()
    dt = dt.reshape(E, N, T).permute(1, 0, 2)  # rearrange(dt, "d (b l) -> b d l", l=T)
    B = B.reshape(N, T, S).permute(0, 2, 1).contiguous()  # "(b l) dstate -> b dstate l"
    C = C.reshape(N, T, S).permute(0, 2, 1).contiguous()
    if scan == "ref":
        y, last_state = selective_scan_ref(
            xs, dt, A, B, C, _float(p["skip"]), z=z, delta_bias=_float(p["b_dt"]),
            delta_softplus=True, return_last_state=True, h0=ssm_state)
        y = y.permute(0, 2, 1)  # rearrange(y, "b d l -> b l d")
    elif scan in ("pscan", "seq"):
        fn = selective_scan_pscan if scan == "pscan" else selective_scan_seq
        delta = F.softplus(dt.transpose(1, 2) + p["b_dt"])
        y, last_state = fn(xs.transpose(1, 2), delta, A, B.transpose(1, 2), C.transpose(1, 2),
                           _float(p["skip"]), h0=ssm_state, return_last_state=True)
        y = y * F.silu(z.transpose(1, 2))
    else:
        raise ValueError(f"scan is 'ref', 'pscan' or 'seq', got {scan!r}")
    out = F.linear(y, p["W_out"].t()).transpose(0, 1)  # out_proj, then back to (T, N, H)
    if residual and out.shape[-1] == Din:
        out = x + out
    return out, final_conv, last_state


def mamba_step(x_t, params, conv_state, ssm_state, residual=True, eps=1e-5):
    """One token, as Mamba.step computes it without causal_conv1d and Triton: x_t (N, D) ->
    (out (N, H), conv state (N, K-1, E), ssm state (N, E, S)), new tensors (Mamba.step updates its
    caches in place).

    Mamba.step's conv cache is (N, E, K): it rolls left, writes the new input in the last column and
    sums against the whole kernel, so the column rolled out is never read again. rnnkit keeps only
    the K-1 inputs it will read, (N, K-1, E); they are widened here by a column of zeros that the
    roll discards.
    """
    p = params
    dtype = x_t.dtype
    u = rms_norm_ref(x_t, p["norm"], None, eps=eps)
    xz = F.linear(u, p["W_in"].t())  # in_proj (B 2D)
    x, z = xz.chunk(2, dim=-1)  # (B D)

    # Conv step
    conv = F.pad(conv_state.transpose(1, 2).to(x.dtype), (1, 0))  # Mamba.step's (B D W)
    conv = torch.roll(conv, shifts=-1, dims=-1)
    conv[:, :, -1] = x
    x = torch.sum(conv * p["conv_w"].t(), dim=-1)  # rearrange(conv1d.weight, "d 1 w -> d w")
    x = x + p["conv_b"]
    x = F.silu(x).to(dtype=dtype)

    K, E, S, R = _sizes(p)
    x_db = F.linear(x, p["W_x"].t())  # (B dt_rank+2*d_state)
    dt, B, C = torch.split(x_db, [R, S, S], dim=-1)
    # Don't add dt_bias here
    dt = F.linear(dt, p["W_dt"].t())  # (B d_inner)
    A = -torch.exp(_float(p["A_log"]))  # (d_inner, d_state)

    # SSM step: discretize A and B
    dt = F.softplus(dt + p["b_dt"].to(dtype=dt.dtype))
    dA = torch.exp(torch.einsum("bd,dn->bdn", dt, A))
    dB = torch.einsum("bd,bn->bdn", dt, B)
    ssm_state = ssm_state * dA + x[:, :, None] * dB  # rearrange(x, "b d -> b d 1")
    y = torch.einsum("bdn,bn->bd", ssm_state.to(dtype), C)
    y = y + p["skip"].to(dtype) * x
    y = y * F.silu(z)  # (B D)

    out = F.linear(y, p["W_out"].t())
    if residual and out.shape[-1] == x_t.shape[-1]:
        out = x_t + out
    return out, conv[:, :, 1:].transpose(1, 2), ssm_state


# --- parameters ---------------------------------------------------------------------------------

PARAM_NAMES = ("norm", "W_in", "conv_w", "conv_b", "W_x", "W_dt", "b_dt", "A_log", "skip", "W_out")


def mamba_init(rng, D, H, state_size=16, expand=2, conv_width=4, dt_rank=None, dtype=np.float32,
               dt_min=1e-3, dt_max=1e-1, dt_init_floor=1e-4):
    """NumPy parameters initialised as mamba_simple.Mamba.__init__ does (nn.Linear/nn.Conv1d default
    U(+-1/sqrt(fan_in)) for the projections and the convolution, dt_proj U(+-R^-0.5), b_dt the
    inverse softplus of log-uniform dt in [dt_min, dt_max], A_log = log(1..S), skip = 1, norm = 1),
    for when rnnkit's own `init_params` is not there. dt_rank None: ceil(H / 16), Mamba's
    ceil(d_model / 16) with H as d_model since E = expand * H."""
    E = int(expand * H)
    R = math.ceil(H / 16) if dt_rank is None else dt_rank
    S, K = state_size, conv_width

    def unif(bound, shape):
        return rng.uniform(-bound, bound, shape)

    dt = np.exp(rng.random(E) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = np.maximum(dt, dt_init_floor)
    p = {"norm": np.ones(D), "W_in": unif(D ** -0.5, (D, 2 * E)),
         "conv_w": unif(K ** -0.5, (K, E)), "conv_b": unif(K ** -0.5, E),
         "W_x": unif(E ** -0.5, (E, R + 2 * S)), "W_dt": unif(R ** -0.5, (R, E)),
         "b_dt": dt + np.log(-np.expm1(-dt)),
         "A_log": np.log(np.tile(np.arange(1, S + 1, dtype=np.float64), (E, 1))),
         "skip": np.ones(E), "W_out": unif(E ** -0.5, (E, H))}
    return {k: v.astype(dtype) for k, v in p.items()}


def torch_params(p, requires_grad=True, dtype=None):
    """rnnkit's NumPy parameter dict as fresh torch tensors (copies: rnnkit's arrays stay as they
    are), leaves that collect gradients unless requires_grad=False."""
    return {k: torch.tensor(np.asarray(v), dtype=dtype, requires_grad=requires_grad)
            for k, v in p.items()}


def numpy_grads(tp):
    """The .grad of each torch parameter as NumPy, for comparing with rnnkit's backward."""
    return {k: (v.grad.detach().numpy().copy() if v.grad is not None else None)
            for k, v in tp.items()}
