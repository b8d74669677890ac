"""Empty inputs for every backend: graphs without edges, nodes without edges, zero atoms.

Model and module level run through the conformance kit's ``empty`` and ``zero_nodes``
checks (:func:`mace_gaunt_plugin.testing.check_backend`, float32 and float64); the 2D
Fourier kernels, which crashed on empty batches (MKL's FFT refuses them), are tested on
their own, eager and TorchScript, with gradients. MACE 0.3.16 itself cannot evaluate a
graph of zero atoms; the last test pins that, so the day it can, this file is revisited.
"""

from __future__ import annotations

import ase
import pytest
import torch
from mace import modules

import mace_gaunt_plugin as mgp
from mace_gaunt_plugin.backends._fourier_ops import FourierAnalysis, FourierGauntProduct, FourierSynthesis
from mace_gaunt_plugin.testing import atoms_to_batch, check_backend, model_energy_forces, small_mace_config

BACKENDS = mgp.available_backends()



@pytest.mark.parametrize("name", BACKENDS)
def test_graphs_without_edges(name: str) -> None:
    assert check_backend(name, checks=("empty",)) == {"empty": "passed"}


@pytest.mark.parametrize("name", ["grid", "gaunt"])
def test_path_conv_on_empty_inputs(name: str) -> None:
    options = {"conv_weights": "path", "sites": "conv"}
    assert check_backend(name, options, checks=("empty", "zero_nodes")) == {"empty": "passed", "zero_nodes": "passed"}


@pytest.mark.parametrize("name", BACKENDS)
def test_site_modules_on_zero_nodes(name: str) -> None:
    expected = "skipped: the backend puts no module of its own into the model" if name == "e3nn" else "passed"
    assert check_backend(name, checks=("zero_nodes",)) == {"zero_nodes": expected}


def _fourier_modules() -> list[tuple[str, torch.nn.Module, int]]:
    return [
        ("synthesis", FourierSynthesis((0, 1, 2), 9, 10, half=True), 9),
        ("synthesis split", FourierSynthesis((0, 1), 7, 6, split=True, half=True), 4),
        ("synthesis full torus", FourierSynthesis((0, 1), 7, 7), 4),
        ("analysis", FourierAnalysis((0, 1), 7, 6, half=True), 4 * 6),
        ("analysis full torus", FourierAnalysis((0, 1), 7, 7), 7 * 7),
    ]


@pytest.mark.parametrize("scripted", [False, True], ids=["eager", "torchscript"])
@pytest.mark.parametrize("lead", [(0,), (0, 3), (3, 0)], ids=str)
def test_fourier_kernels_on_empty_batches(lead: tuple[int, ...], scripted: bool, float64) -> None:
    for what, module, width in _fourier_modules():
        ref = module(torch.randn(2, width))  # the shape of one row's result
        run = torch.jit.script(module) if scripted else module
        x = torch.randn(lead + (width,), requires_grad=True)
        out = run(x)
        assert out.shape == lead + ref.shape[1:], what
        out.sum().backward()
        assert x.grad is not None and x.grad.shape == x.shape, what
    product = FourierGauntProduct(1, 2, 2, half=True)
    x = torch.randn(lead + (4,), requires_grad=True)
    z = product(x, torch.randn(lead + (9,)))
    assert z.shape == lead + (9,)
    (grad,) = torch.autograd.grad(z.sum(), x, create_graph=True)
    assert grad.shape == x.shape


def test_fourier_kernels_unchanged_on_nonempty_batches(float64) -> None:
    # the empty-batch row is appended only for empty batches: a batch with rows gives the
    # same numbers row by row as the rows alone
    for what, module, width in _fourier_modules():
        x = torch.randn(5, width)
        rows = torch.cat([module(x[i : i + 1]) for i in range(5)])
        torch.testing.assert_close(module(x), rows, rtol=0, atol=1e-12, msg=what)


def _zero_atom_batch(cfg: dict) -> dict[str, torch.Tensor]:
    """One graph with no atoms: a one-atom batch with its per-atom rows removed."""
    one = atoms_to_batch([ase.Atoms("C", positions=[[0.0, 0.0, 0.0]])], cfg["atomic_numbers"], cfg["r_max"])
    per_atom = {"positions", "node_attrs", "batch", "forces", "charges"}
    out = {k: (v[:0] if k in per_atom else v) for k, v in one.items()}
    out["ptr"] = torch.zeros_like(one["ptr"])
    return out


def test_zero_atoms_is_a_mace_limitation(float64) -> None:
    cfg = small_mace_config(hidden_irreps="4x0e + 4x1o", num_interactions=1)
    with pytest.raises(ValueError, match="zero-size array"):  # MACE's data pipeline (neighbour list)
        atoms_to_batch([ase.Atoms()], cfg["atomic_numbers"], cfg["r_max"])
    stock = modules.ScaleShiftMACE(**cfg)
    with pytest.raises(RuntimeError, match="cannot reshape tensor of 0 elements"):  # MACE's SymmetricContraction
        model_energy_forces(stock, _zero_atom_batch(cfg))
