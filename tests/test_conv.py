"""Convolution, ReLU and pooling: numerical gradient checks (float64, random upstream gradient) and
parity with torch.nn.functional on identical weights, forward and backward."""

import numpy as np
import pytest

from gradcheck import numerical_grad, rel_error
from rnnkit.functional.conv import (
    avgpool2d_backward,
    avgpool2d_forward,
    col2im,
    conv2d_backward,
    conv2d_forward,
    global_avgpool_backward,
    global_avgpool_forward,
    im2col,
    maxpool2d_backward,
    maxpool2d_forward,
    relu_backward,
    relu_forward,
)
from rnnkit.layers.conv import Conv2d, GlobalAvgPool, MaxPool2d, ReLU, Sequential

TOL = 1e-7


@pytest.mark.parametrize("stride,pad", [(1, 0), (1, 1), (2, 1), (2, 0)])
def test_conv2d_gradients(rng, stride, pad):
    x = rng.standard_normal((2, 3, 7, 6))
    w = rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(4)
    out, cache = conv2d_forward(x, w, b, stride, pad)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = conv2d_backward(dout, cache)
    f = lambda: conv2d_forward(x, w, b, stride, pad)[0]  # noqa: E731
    for name, arr, g in (("x", x, dx), ("w", w, dw), ("b", b, db)):
        err = rel_error(numerical_grad(f, arr, dout), g)
        assert err < TOL, f"d{name}: relative error {err:.2e}"


def test_im2col_col2im_adjoint(rng):
    """<im2col(x), c> == <x, col2im(c)>: col2im is exactly the transpose of im2col."""
    x = rng.standard_normal((2, 3, 6, 5))
    cols = im2col(x, 3, 2, stride=2, pad=1)
    c = rng.standard_normal(cols.shape)
    assert np.isclose(np.sum(cols * c), np.sum(x * col2im(c, x.shape, 3, 2, stride=2, pad=1)))


def test_relu_and_pool_gradients(rng):
    # values spaced apart so no max-pool tie or ReLU kink lies within the finite-difference step
    x = rng.permutation(np.linspace(-3, 3, 2 * 3 * 6 * 6)).reshape(2, 3, 6, 6)
    for fw, bw, kw in ((relu_forward, relu_backward, {}),
                       (maxpool2d_forward, maxpool2d_backward, {"k": 2}),
                       (maxpool2d_forward, maxpool2d_backward, {"k": 3, "stride": 2}),
                       (avgpool2d_forward, avgpool2d_backward, {"k": 2}),
                       (avgpool2d_forward, avgpool2d_backward, {"k": 3, "stride": 1}),
                       (global_avgpool_forward, global_avgpool_backward, {})):
        out, cache = fw(x, **kw)
        dout = rng.standard_normal(out.shape)
        dx = bw(dout, cache)
        err = rel_error(numerical_grad(lambda: fw(x, **kw)[0], x, dout), dx)
        assert err < TOL, f"{fw.__name__}{kw}: relative error {err:.2e}"


def test_conv_stack_layers_gradients(rng):
    """The layer objects chained (conv-relu-pool-conv-relu-gap) give the numerical gradient too."""
    net = Sequential(Conv2d(2, 3, 3, padding=1, dtype=np.float64, seed=1), ReLU(), MaxPool2d(2),
                     Conv2d(3, 4, 3, stride=1, dtype=np.float64, seed=2), ReLU(), GlobalAvgPool())
    x = rng.standard_normal((2, 2, 8, 8))
    out = net.forward(x)
    dout = rng.standard_normal(out.shape)
    net.zero_grad()
    dx = net.backward(dout)
    assert rel_error(numerical_grad(lambda: net.forward(x), x, dout), dx) < 1e-6
    for name, p, g in net.named_parameters():
        assert rel_error(numerical_grad(lambda: net.forward(x), p, dout), g) < 1e-6, name


torch = pytest.importorskip("torch")
F = torch.nn.functional


def _t(a):
    return torch.tensor(a, requires_grad=True)


@pytest.mark.parametrize("stride,pad", [(1, 1), (2, 0), (2, 2)])
def test_conv2d_matches_torch(rng, stride, pad):
    x, w, b = rng.standard_normal((3, 4, 9, 8)), rng.standard_normal((5, 4, 3, 3)), rng.standard_normal(5)
    out, cache = conv2d_forward(x, w, b, stride, pad)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = conv2d_backward(dout, cache)
    tx, tw, tb = _t(x), _t(w), _t(b)
    tout = F.conv2d(tx, tw, tb, stride=stride, padding=pad)
    tout.backward(torch.tensor(dout))
    np.testing.assert_allclose(out, tout.detach().numpy(), rtol=1e-10, atol=1e-10)
    for a, t in ((dx, tx), (dw, tw), (db, tb)):
        np.testing.assert_allclose(a, t.grad.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind,k,stride", [("max", 2, 2), ("max", 3, 2), ("avg", 2, 2), ("avg", 3, 1)])
def test_pool_and_relu_match_torch(rng, kind, k, stride):
    x = rng.standard_normal((2, 3, 7, 7))
    fw, bw = (maxpool2d_forward, maxpool2d_backward) if kind == "max" else (avgpool2d_forward,
                                                                            avgpool2d_backward)
    r, rc = relu_forward(x)
    out, cache = fw(r, k, stride)
    dout = rng.standard_normal(out.shape)
    dx = relu_backward(bw(dout, cache), rc)
    tx = _t(x)
    pool = F.max_pool2d if kind == "max" else F.avg_pool2d
    tout = pool(F.relu(tx), k, stride)
    tout.backward(torch.tensor(dout))
    np.testing.assert_allclose(out, tout.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_conv_layer_float32_matches_torch_conv_module(rng):
    """The Conv2d layer with a torch.nn.Conv2d's weights copied in gives the same output in float32."""
    conv = Conv2d(3, 6, 3, stride=2, padding=1, init="torch", seed=0)
    tconv = torch.nn.Conv2d(3, 6, 3, stride=2, padding=1)
    with torch.no_grad():
        tconv.weight.copy_(torch.tensor(conv.params["w"]))
        tconv.bias.copy_(torch.tensor(conv.params["b"]))
    x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    out = conv.forward(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, tconv(torch.tensor(x)).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_conv_bad_shapes():
    with pytest.raises(ValueError, match="w has shape"):
        conv2d_forward(np.zeros((1, 3, 5, 5)), np.zeros((2, 4, 3, 3)), None)
    with pytest.raises(ValueError, match="no output"):
        conv2d_forward(np.zeros((1, 3, 2, 2)), np.zeros((2, 3, 3, 3)), None)
