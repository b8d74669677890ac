"""CUDA agreement for every registered backend: the same model on the GPU gives the CPU
result (float64), eagerly and as TorchScript. Skipped, with the reason shown, on machines
without a CUDA GPU (CI has none; the GPU script in benchmarks/ runs these)."""

from __future__ import annotations

import copy

import pytest
import torch
from e3nn.util import jit

import mace_gaunt_plugin as mgp
from mace_gaunt_plugin.testing import atoms_to_batch, model_energy_forces, small_mace_config

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize("backend", mgp.available_backends())
def test_cuda_matches_cpu(backend: str, bpa_atoms, float64) -> None:
    cfg = small_mace_config()
    torch.manual_seed(0)
    model = mgp.build_model(backend, **cfg)
    batch = atoms_to_batch(bpa_atoms, cfg["atomic_numbers"], cfg["r_max"])
    e_cpu, f_cpu = model_energy_forces(model, batch)
    gpu = copy.deepcopy(model).to("cuda")
    batch_gpu = {k: v.to("cuda") if torch.is_tensor(v) else v for k, v in batch.items()}
    e_gpu, f_gpu = model_energy_forces(gpu, batch_gpu)
    torch.testing.assert_close(e_gpu.cpu(), e_cpu, rtol=0, atol=1e-9)
    torch.testing.assert_close(f_gpu.cpu(), f_cpu, rtol=0, atol=1e-9)
    scripted = jit.compile(copy.deepcopy(model)).to("cuda")
    e_js, f_js = model_energy_forces(scripted, batch_gpu)
    torch.testing.assert_close(e_js.cpu(), e_cpu, rtol=0, atol=1e-9)
    torch.testing.assert_close(f_js.cpu(), f_cpu, rtol=0, atol=1e-9)


@pytest.mark.parametrize("backend", mgp.available_backends())
def test_cuda_float32_training_step(backend: str, bpa_atoms) -> None:
    """A float32 training step with a force loss runs on the GPU (double backward)."""
    cfg = small_mace_config()
    torch.manual_seed(0)
    model = mgp.build_model(backend, **cfg).to("cuda")
    batch = atoms_to_batch(bpa_atoms, cfg["atomic_numbers"], cfg["r_max"], device="cuda")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    e, f = model_energy_forces(model, batch, training=True)
    loss = (e**2).mean() + (f**2).mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    opt.step()
