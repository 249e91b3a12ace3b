"""Convolution (im2col), ReLU, max and average pooling: stateless forward / backward pairs.

Dimensions, declared once for this module (PyTorch's NCHW layout, so weights move over unchanged):
    N  batch size      C  input channels     H, W   input height / width
    F  filters         KH, KW  kernel size   Ho, Wo output height / width

    x    (N, C, H, W)        input images or feature maps
    w    (F, C, KH, KW)      filters, as in torch.nn.Conv2d
    b    (F,)
    out  (N, F, Ho, Wo)      Ho = (H + 2 pad - KH) // stride + 1 (and the same for Wo)

The convolution is one matrix product over an im2col buffer `cols` (C*KH*KW, N*Ho*Wo) (CS231n's fast
layers). The buffer is built, and its gradient folded back (col2im), by one strided copy per kernel offset
(KH*KW slices of the whole batch), never a Python loop over pixels.
"""

from __future__ import annotations

from typing import NamedTuple

from rnnkit import kernels
from rnnkit.backend import get_array_module
from rnnkit.functional._checks import expect_shape


def _out_size(size, k, stride, pad, what):
    o = (size + 2 * pad - k) // stride + 1
    if o < 1:
        raise ValueError(f"{what}: input size {size} with kernel {k}, stride {stride}, padding {pad} "
                         f"gives no output")
    return o


# --- im2col / col2im ------------------------------------------------------------------------------


def im2col(x, KH, KW, stride=1, pad=0):
    """x (N, C, H, W) -> cols (C*KH*KW, N*Ho*Wo); row (c, i, j) holds x_pad[n, c, i + s*y, j + s*x]."""
    xp = get_array_module(x)
    N, C, H, W = x.shape
    Ho, Wo = _out_size(H, KH, stride, pad, "im2col"), _out_size(W, KW, stride, pad, "im2col")
    xpad = xp.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else x
    cols = xp.empty((C, KH, KW, N, Ho, Wo), dtype=x.dtype)
    for i in range(KH):
        for j in range(KW):
            # all output positions read input (i + s*y, j + s*x) for this kernel offset
            win = xpad[:, :, i:i + stride * Ho:stride, j:j + stride * Wo:stride]
            cols[:, i, j] = win.transpose(1, 0, 2, 3)
    return cols.reshape(C * KH * KW, N * Ho * Wo)


def col2im(dcols, x_shape, KH, KW, stride=1, pad=0):
    """The adjoint of im2col: add each column entry back onto the input pixel it was copied from."""
    xp = get_array_module(dcols)
    N, C, H, W = x_shape
    Ho, Wo = _out_size(H, KH, stride, pad, "col2im"), _out_size(W, KW, stride, pad, "col2im")
    d = dcols.reshape(C, KH, KW, N, Ho, Wo)
    dxpad = xp.zeros((N, C, H + 2 * pad, W + 2 * pad), dtype=dcols.dtype)
    for i in range(KH):
        for j in range(KW):
            # overlapping windows (stride < kernel) hit the same pixel from several offsets: +=
            win = dxpad[:, :, i:i + stride * Ho:stride, j:j + stride * Wo:stride]
            win += d[:, i, j].transpose(1, 0, 2, 3)  # a view: adds into dxpad
    return dxpad[:, :, pad:pad + H, pad:pad + W] if pad else dxpad


# --- convolution ----------------------------------------------------------------------------------


class ConvCache(NamedTuple):
    x_shape: tuple
    cols: object  # (C*KH*KW, N*Ho*Wo)
    w: object  # (F, C, KH, KW)
    stride: int
    pad: int


def conv2d_forward(x, w, b, stride=1, pad=0):
    """out[n, f] = sum_c x_pad[n, c] (*) w[f, c] + b[f] (cross-correlation, as torch.nn.functional.conv2d).

    x: (N, C, H, W); w: (F, C, KH, KW); b: (F,) or None. Returns out (N, F, Ho, Wo) and the cache.
    """
    expect_shape("x", x, (None, None, None, None), ("N", "C", "H", "W"))
    expect_shape("w", w, (None, x.shape[1], None, None), ("F", "C", "KH", "KW"))
    if b is not None:
        expect_shape("b", b, (w.shape[0],), ("F",))
    if stride < 1 or pad < 0:
        raise ValueError(f"conv2d: stride must be >= 1 and pad >= 0, got stride={stride}, pad={pad}")
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    Ho, Wo = _out_size(H, KH, stride, pad, "conv2d"), _out_size(W, KW, stride, pad, "conv2d")
    cols = im2col(x, KH, KW, stride, pad)
    out = kernels.matmul(w.reshape(F, -1), cols)  # (F, N*Ho*Wo): the whole convolution as one product
    if b is not None:
        out += b[:, None]
    out = out.reshape(F, N, Ho, Wo).transpose(1, 0, 2, 3)
    xp = get_array_module(x)
    return xp.ascontiguousarray(out), ConvCache(x.shape, cols, w, stride, pad)


def conv2d_backward(dout, cache: ConvCache):
    """dout (N, F, Ho, Wo) -> dx (N, C, H, W), dw (F, C, KH, KW), db (F,)."""
    x_shape, cols, w, stride, pad = cache
    F, C, KH, KW = w.shape
    d2 = dout.transpose(1, 0, 2, 3).reshape(F, -1)  # (F, N*Ho*Wo)
    db = d2.sum(axis=1)  # b was added at every output position
    dw = kernels.matmul(d2, cols.T).reshape(w.shape)  # out = W cols  =>  dW = dout cols^T
    dcols = kernels.matmul(w.reshape(F, -1).T, d2)  # and dcols = W^T dout
    dx = col2im(dcols, x_shape, KH, KW, stride, pad)
    return dx, dw, db


# --- ReLU -----------------------------------------------------------------------------------------


def relu_forward(x):
    """out = max(x, 0); the cache is the mask of positive inputs."""
    xp = get_array_module(x)
    pos = x > 0
    return xp.where(pos, x, 0).astype(x.dtype, copy=False), pos


def relu_backward(dout, cache):
    """dx = dout where x > 0, else 0 (the subgradient at 0 is taken as 0, like PyTorch)."""
    xp = get_array_module(dout)
    return xp.where(cache, dout, 0).astype(dout.dtype, copy=False)


# --- pooling --------------------------------------------------------------------------------------


class PoolCache(NamedTuple):
    x_shape: tuple
    k: int
    stride: int
    arg: object  # max pool: (N, C, Ho, Wo) index of the winning offset in the k*k window; avg: None


def _windows(x, k, stride):
    """x (N, C, H, W) -> (k*k, N, C, Ho, Wo): the window's value at each kernel offset (i, j)."""
    xp = get_array_module(x)
    N, C, H, W = x.shape
    Ho, Wo = _out_size(H, k, stride, 0, "pool"), _out_size(W, k, stride, 0, "pool")
    win = xp.empty((k * k, N, C, Ho, Wo), dtype=x.dtype)
    for i in range(k):
        for j in range(k):
            win[i * k + j] = x[:, :, i:i + stride * Ho:stride, j:j + stride * Wo:stride]
    return win


def _check_pool(x, k, stride):
    expect_shape("x", x, (None, None, None, None), ("N", "C", "H", "W"))
    if k < 1 or stride < 1:
        raise ValueError(f"pool: kernel and stride must be >= 1, got kernel={k}, stride={stride}")


def maxpool2d_forward(x, k=2, stride=None):
    """out[n, c, y, x] = max over the k x k window at (s*y, s*x); stride defaults to k, no padding.

    The backward routes each output gradient to the window's (first) maximum, as PyTorch does.
    """
    stride = k if stride is None else stride
    _check_pool(x, k, stride)
    win = _windows(x, k, stride)
    arg = win.argmax(axis=0)  # ties go to the first offset in row-major order, like PyTorch
    xp = get_array_module(x)
    out = xp.take_along_axis(win, arg[None], axis=0)[0]
    return out, PoolCache(x.shape, k, stride, arg)


def maxpool2d_backward(dout, cache: PoolCache):
    xp = get_array_module(dout)
    x_shape, k, stride, arg = cache
    Ho, Wo = dout.shape[2:]
    dx = xp.zeros(x_shape, dtype=dout.dtype)
    for i in range(k):
        for j in range(k):
            # windows may overlap when stride < k, so add rather than assign
            win = dx[:, :, i:i + stride * Ho:stride, j:j + stride * Wo:stride]
            win += xp.where(arg == i * k + j, dout, 0)  # a view: adds into dx
    return dx


def avgpool2d_forward(x, k=2, stride=None):
    """out = mean over each k x k window (stride defaults to k, no padding)."""
    stride = k if stride is None else stride
    _check_pool(x, k, stride)
    out = _windows(x, k, stride).mean(axis=0)
    return out.astype(x.dtype, copy=False), PoolCache(x.shape, k, stride, None)


def avgpool2d_backward(dout, cache: PoolCache):
    """Each input pixel gets dout / k^2 from every window it lies in."""
    xp = get_array_module(dout)
    x_shape, k, stride, _ = cache
    Ho, Wo = dout.shape[2:]
    dx = xp.zeros(x_shape, dtype=dout.dtype)
    share = dout / (k * k)
    for i in range(k):
        for j in range(k):
            dx[:, :, i:i + stride * Ho:stride, j:j + stride * Wo:stride] += share
    return dx


def global_avgpool_forward(x):
    """x (N, C, H, W) -> (N, C): the mean over all positions (the image feature vector)."""
    expect_shape("x", x, (None, None, None, None), ("N", "C", "H", "W"))
    return x.mean(axis=(2, 3)), x.shape


def global_avgpool_backward(dout, cache):
    xp = get_array_module(dout)
    N, C, H, W = cache
    return xp.broadcast_to(dout[:, :, None, None] / (H * W), cache).astype(dout.dtype, copy=True)
