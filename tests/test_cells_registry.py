"""The cell registry and the C interface: a cell is found by name with its options, refused clearly
when unknown, and registered from outside; a compiled entry point's arguments are read from its C
prototype and checked by name; the backend picks the compiled loop or the reference."""

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

import rnnkit
from rnnkit import cells, kernels
from rnnkit.backend import COMPILED, REFERENCE, get_ops
from rnnkit.cells.rnn import RNN_FW, RNNCell
from rnnkit.kernels.cinterface import read_prototypes


def test_builtin_cells_and_their_layer_classes():
    assert cells.names()[:5] == ["lstm", "gru", "rnn", "rnn_relu", "mingru"]
    assert cells.create("rnn_relu").nonlinearity == "relu"
    assert cells.create("lstm", forget_bias=1.0).forget_bias == 1.0
    for name in cells.names(plugins=False):
        cell = cells.create(name)
        layer = rnnkit.make_recurrent(name, 3, 4)
        assert isinstance(layer, rnnkit.layer_class(name)) and layer.cell == cell
        assert type(layer).__name__ == type(cell).title
    assert rnnkit.LSTM is rnnkit.layer_class("lstm") and rnnkit.layers.GRU is rnnkit.layer_class("gru")
    assert set(rnnkit.layer_classes()) <= set(rnnkit.__all__) | set(rnnkit.layer_classes())
    with pytest.raises(AttributeError):
        rnnkit.NoSuchLayer  # noqa: B018


def test_unknown_cells_and_options_are_refused_by_name():
    with pytest.raises(ValueError, match="cell must be one of lstm, gru, .*; got 'lstn'"):
        cells.create("lstn")
    with pytest.raises(ValueError, match="cell 'gru' has no option forget_bias"):
        cells.create("gru", forget_bias=1.0)
    # make_recurrent leaves out what the cell does not have: one config can carry the LSTM's option
    assert rnnkit.make_recurrent("gru", 3, 4, forget_bias=1.0).cell == cells.create("gru")
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu'"):
        rnnkit.RNN(3, 4, nonlinearity="sigmoid")
    with pytest.raises(TypeError, match="subclass of rnnkit.cells.Cell"):
        cells.register(dict)


def test_register_refuses_a_taken_name_unless_replaced(monkeypatch):
    monkeypatch.setattr(cells, "_REGISTRY", dict(cells._REGISTRY))  # registrations end with the test

    @dataclasses.dataclass
    class Other(RNNCell):
        name = "rnn_twice"

    cells.register(Other)
    cells.register(Other)  # the same class again (a module imported twice) is fine
    Impostor = type("Other", (RNNCell,), {"__module__": "elsewhere", "name": "rnn_twice"})
    with pytest.raises(ValueError, match="a cell named 'rnn_twice' is registered already"):
        cells.register(dataclasses.dataclass(Impostor))
    with pytest.raises(ValueError, match="has no option colour"):
        cells.register(Other, "rnn_thrice", colour="red")
    with pytest.raises(ValueError, match="letters, digits and '_'"):
        cells.register(Other, "rnn twice")


def test_option_help_names_the_cells_that_have_it():
    assert cells.option_help("update_bias").startswith("mingru: the update gate's bias")
    assert cells.option_help("forget_bias").startswith("lstm: ")


def test_a_plugin_that_fails_is_one_line_naming_it(tmp_path):
    bad = tmp_path / "broken_cell.py"
    bad.write_text("raise RuntimeError('half written')\n")
    env = {"RNNKIT_CELLS": str(bad), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "rnnkit", "train", "lm", "--help"], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"rnnkit: error: cell plugin {bad}: RuntimeError: half written"]
    r = subprocess.run([sys.executable, "-m", "rnnkit", "train", "lm", "--help"],
                       env={**env, "RNNKIT_CELLS": str(tmp_path / "missing.py")}, capture_output=True,
                       text=True)
    assert r.returncode == 2 and "missing.py: no such file" in r.stderr and "Traceback" not in r.stderr


def test_prototypes_are_read_from_the_c_source(tmp_path):
    src = tmp_path / "cell.c"
    src.write_text("/* EXPORT void FN(commented)(long T) */\n"
                   "EXPORT void FN(loop)(long T, long N, long H, long n0, long n1, const R *x,\n"
                   "                     R *h, const unsigned char *mask, int flag, void *gemm,\n"
                   "                     int ilp64) {}\n")
    protos = read_prototypes(src)
    assert list(protos) == ["loop"]
    got = [(p.name, p.kind, p.const) for p in protos["loop"]]
    assert got == [("T", "int", False), ("N", "int", False), ("H", "int", False), ("n0", "int", False),
                   ("n1", "int", False), ("x", "array", True), ("h", "array", False),
                   ("mask", "bytes", True), ("flag", "int", False), ("gemm", "ptr", False),
                   ("ilp64", "int", False)]
    src.write_text("EXPORT void FN(odd)(long T, float *x) {}\n")
    with pytest.raises(ValueError, match="argument x has type 'float\\*'"):
        read_prototypes(src)


def _rnn_args(dtype=np.float64):
    rng = np.random.default_rng(0)
    h = rng.standard_normal((4, 3, 5)).astype(dtype)
    return dict(T=3, N=3, H=5, h=h, Wh=(rng.standard_normal((5, 5)) * 0.3).astype(dtype), mask=None,
                relu=0)


@pytest.mark.skipif(not kernels.status()["available"], reason="compiled kernels unavailable")
def test_a_kernel_is_called_by_name_and_checks_its_arguments():
    args = _rnn_args()
    with pytest.raises(TypeError, match="rnn_fw: missing relu"):
        RNN_FW.compiled({k: v for k, v in args.items() if k != "relu"})
    with pytest.raises(TypeError, match="rnn_fw: no argument colour"):
        RNN_FW.compiled({**args, "colour": 1})
    with pytest.raises(ValueError, match="rnn_fw: h must be C-contiguous"):
        RNN_FW.compiled({**args, "h": np.asfortranarray(args["h"])})
    # a const argument that is not contiguous is copied; another dtype or array type: the reference
    assert RNN_FW.compiled({**args, "Wh": np.asfortranarray(args["Wh"])}) is not None
    assert RNN_FW.compiled({**args, "Wh": args["Wh"].astype(np.float32)}) is None
    assert RNN_FW.compiled(_rnn_args(np.float16)) is None


@pytest.mark.skipif(not kernels.status()["available"], reason="compiled kernels unavailable")
def test_backend_runs_the_compiled_loop_or_the_reference_alike():
    a, b = _rnn_args(), _rnn_args()
    assert get_ops(a["h"]) is COMPILED
    COMPILED.run(RNN_FW, **a)
    REFERENCE.run(RNN_FW, **b)
    np.testing.assert_allclose(a["h"], b["h"], rtol=1e-13, atol=1e-13)
    with kernels.reference():
        assert get_ops(a["h"]) is REFERENCE

    class Elsewhere(np.ndarray):  # an array that is not NumPy's own type: the reference runs it
        pass

    assert get_ops(np.zeros(2).view(Elsewhere)) is REFERENCE


def test_library_cache_key_follows_the_source(tmp_path):
    from rnnkit.kernels import build

    src = tmp_path / "k.c"
    src.write_text("EXPORT void FN(k)(long T) {}\n")
    first = build.library_path(src)
    src.write_text("EXPORT void FN(k)(long T) { (void)T; }\n")
    assert build.library_path(src) != first and build.library_path(src).name.startswith("k-")
