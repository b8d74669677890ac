"""Helpers shared by the test suite, the benchmarks and third-party backend authors:
small MACE configurations, batches from ASE atoms, synthetic systems, and the
conformance kit :func:`check_backend` that runs the checks every built-in backend
passes. Importing this module imports torch and mace.

>>> from mace_gaunt_plugin.testing import CHECKS
>>> CHECKS[:3]
('o3', 'translation', 'permutation')
"""

from __future__ import annotations

import contextlib
import copy
import io
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import numpy as np
import torch

import mace  # noqa: F401  (sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD before e3nn loads)
from e3nn import o3

__all__ = [
    "CHECKS",
    "BackendCheckError",
    "check_backend",
    "synthetic_molecule",
    "TOLERANCES",
    "default_dtype",
    "small_mace_config",
    "atoms_to_batch",
    "model_energy_forces",
    "random_orthogonal",
]

#: Absolute tolerances for float comparisons that should be exact up to rounding.
TOLERANCES = {torch.float32: 1e-4, torch.float64: 1e-10}


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[torch.dtype]:
    """Run a block with torch's default dtype set to ``dtype`` (models and batches are
    built in it) and restore the previous default afterwards, also on error."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield dtype
    finally:
        torch.set_default_dtype(old)


def small_mace_config(
    hidden_irreps: str = "8x0e + 8x1o",
    max_ell: int = 3,
    correlation: int = 3,
    num_interactions: int = 2,
    atomic_numbers: Sequence[int] = (1, 6, 7, 8),
    r_max: float = 5.0,
    interaction: str = "RealAgnosticResidualInteractionBlock",
    **overrides: Any,
) -> dict[str, Any]:
    """Keyword arguments for ``mace.modules.ScaleShiftMACE`` describing a small model
    (the defaults match MACE's own defaults except for size)."""
    from mace import modules

    z = list(atomic_numbers)
    config: dict[str, Any] = dict(
        r_max=r_max,
        num_bessel=8,
        num_polynomial_cutoff=5,
        max_ell=max_ell,
        interaction_cls=modules.interaction_classes[interaction],
        interaction_cls_first=modules.interaction_classes[interaction],
        num_interactions=num_interactions,
        num_elements=len(z),
        hidden_irreps=o3.Irreps(hidden_irreps),
        MLP_irreps=o3.Irreps("16x0e"),
        gate=torch.nn.functional.silu,
        atomic_energies=np.linspace(-1.0, -4.0, len(z)),
        avg_num_neighbors=8.0,
        atomic_numbers=z,
        correlation=correlation,
        radial_MLP=[16, 16],
        atomic_inter_scale=1.0,
        atomic_inter_shift=0.0,
    )
    config.update(overrides)
    return config


def atoms_to_batch(atoms_list: Sequence[Any], atomic_numbers: Sequence[int], r_max: float, device: str = "cpu") -> dict[str, torch.Tensor]:
    """A MACE input dict for a list of ``ase.Atoms`` (neighbour lists by MACE itself)."""
    from mace import data, tools
    from mace.tools import torch_geometric

    z_table = tools.AtomicNumberTable(list(atomic_numbers))
    configs = [data.config_from_atoms(a) for a in atoms_list]
    graphs = [data.AtomicData.from_config(c, z_table=z_table, cutoff=r_max) for c in configs]
    loader = torch_geometric.dataloader.DataLoader(graphs, batch_size=len(graphs), shuffle=False, drop_last=False)
    batch = next(iter(loader)).to(device)
    out = batch.to_dict()
    dtype = torch.get_default_dtype()
    return {k: (v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in out.items()}


def model_energy_forces(model: torch.nn.Module, batch: dict[str, torch.Tensor], training: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Energies ``[n_graphs]`` and forces ``[n_atoms, 3]`` of ``model`` on ``batch``."""
    out = model(dict(batch), training=training, compute_force=True)
    return out["energy"], out["forces"]


def random_orthogonal(seed: int, reflect: bool, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A random 3x3 rotation (``reflect=False``) or rotation times inversion."""
    gen = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q = -q
    if reflect:
        q = -q
    return q.to(dtype)


def irreps_transform(irreps: o3.Irreps, rotation: torch.Tensor) -> torch.Tensor:
    """The representation matrix of ``irreps`` for an O(3) element (e3nn's D_from_matrix)."""
    return o3.Irreps(irreps).D_from_matrix(rotation)


# --------------------------------------------------------------------------- conformance kit

#: The checks :func:`check_backend` runs, in order (see its docstring for what each asserts).
CHECKS = (
    "o3",
    "translation",
    "permutation",
    "forces",
    "torchscript",
    "pickle",
    "dtypes",
    "empty",
    "zero_nodes",
    "switch",
    "extract_config",
)
#: Checks run once in each dtype of ``dtypes``; the others run once (float64 if given).
PER_DTYPE = ("o3", "translation", "permutation", "torchscript", "pickle", "empty", "zero_nodes")


class BackendCheckError(AssertionError):
    """One or more :func:`check_backend` checks failed; ``failures`` maps each failed
    check (``"o3[float32]"``) to its message, ``results`` holds all outcomes."""

    def __init__(self, backend: str, failures: Mapping[str, str], results: Mapping[str, str]) -> None:
        self.backend = backend
        self.failures = dict(failures)
        self.results = dict(results)
        lines = "\n".join(f"  {check}: {msg}" for check, msg in self.failures.items())
        super().__init__(f"TP backend {backend!r} failed {len(self.failures)} conformance check(s):\n{lines}")


class _Skip(Exception):
    """Raised by a check that does not apply to this backend; the text says why."""


def synthetic_molecule(n_atoms: int = 10, atomic_numbers: Sequence[int] = (1, 6, 7, 8), seed: int = 0, min_distance: float = 1.0) -> Any:
    """A random cluster (``ase.Atoms``) of ``n_atoms`` atoms of ``atomic_numbers`` (each at
    least once when ``n_atoms`` allows), no two closer than ``min_distance`` Å, in a box
    small enough that most pairs are within a 5 Å cutoff. Same seed, same molecule.

    >>> synthetic_molecule(6, (1, 8), seed=1).get_chemical_formula()
    'H3O3'
    """
    import ase

    rng = np.random.default_rng(seed)
    z = [atomic_numbers[i % len(atomic_numbers)] for i in range(n_atoms)]
    side = 1.6 * n_atoms ** (1 / 3) + 1.0
    positions: list[np.ndarray] = []
    while len(positions) < n_atoms:
        p = rng.uniform(0.0, side, 3)
        if all(np.linalg.norm(p - q) >= min_distance for q in positions):
            positions.append(p)
    return ase.Atoms(numbers=z, positions=np.array(positions))


@dataclass
class _Context:
    """What every check sees: the backend, the model config and a model per dtype."""

    name: str
    options: dict[str, Any]
    config: dict[str, Any]
    seed: int
    molecule: Any
    models: dict[torch.dtype, torch.nn.Module] = field(default_factory=dict)

    def model(self, dtype: torch.dtype) -> torch.nn.Module:
        if dtype not in self.models:
            from .mace import build_model

            torch.manual_seed(self.seed)
            with default_dtype(dtype):
                self.models[dtype] = build_model(self.name, backend_options=self.options, **self.config)
        return self.models[dtype]

    def batch(self, atoms_list: Sequence[Any], dtype: torch.dtype) -> dict[str, torch.Tensor]:
        with default_dtype(dtype):
            return atoms_to_batch(atoms_list, self.config["atomic_numbers"], self.config["r_max"])

    def evaluate(self, model: torch.nn.Module, atoms_list: Sequence[Any], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        energy, forces = model_energy_forces(model, self.batch(atoms_list, dtype))
        return energy.detach(), forces.detach()


def _close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    torch.testing.assert_close(actual, expected, rtol=0, atol=TOLERANCES[dtype], msg=lambda m: f"{what}: {m}")


def _not_degenerate(forces: torch.Tensor, what: str) -> None:
    if not (torch.isfinite(forces).all() and forces.abs().max() > 1e-6):
        raise AssertionError(f"{what}: forces are zero or not finite, so the symmetry checks would prove nothing")


def _check_o3(ctx: _Context, dtype: torch.dtype) -> None:
    """Energy invariant and forces equivariant under two rotations and one rotoreflection."""
    rots = [random_orthogonal(1, False), random_orthogonal(2, False), random_orthogonal(3, True)]
    variants = [ctx.molecule.copy()]
    for r in rots:
        a = ctx.molecule.copy()
        a.positions = ctx.molecule.positions @ r.numpy().T
        variants.append(a)
    e, f = ctx.evaluate(ctx.model(dtype), variants, dtype)
    f = f.reshape(len(variants), len(ctx.molecule), 3)
    _not_degenerate(f[0], "o3")
    for k, r in enumerate(rots, start=1):
        kind = "rotoreflection" if torch.det(r) < 0 else "rotation"
        _close(e[k], e[0], dtype, f"energy not invariant under a {kind}")
        _close(f[k], f[0] @ r.to(f.dtype).T, dtype, f"forces not equivariant under a {kind}")


def _check_translation(ctx: _Context, dtype: torch.dtype) -> None:
    """Energy and forces unchanged by a rigid shift."""
    shifted = ctx.molecule.copy()
    shifted.positions += np.array([3.1, -7.2, 0.4])
    e, f = ctx.evaluate(ctx.model(dtype), [ctx.molecule, shifted], dtype)
    n = len(ctx.molecule)
    _not_degenerate(f[:n], "translation")
    _close(e[1], e[0], dtype, "energy changed by a translation")
    _close(f[n:], f[:n], dtype, "forces changed by a translation")


def _check_permutation(ctx: _Context, dtype: torch.dtype) -> None:
    """Energy invariant, forces permuted along with the atoms."""
    perm = np.random.default_rng(ctx.seed).permutation(len(ctx.molecule))
    e, f = ctx.evaluate(ctx.model(dtype), [ctx.molecule, ctx.molecule[perm]], dtype)
    n = len(ctx.molecule)
    _not_degenerate(f[:n], "permutation")
    _close(e[1], e[0], dtype, "energy changed by permuting the atoms")
    _close(f[n:], f[:n][torch.from_numpy(perm)], dtype, "forces not permuted with the atoms")


def _check_forces(ctx: _Context, dtype: torch.dtype) -> None:
    """Forces equal minus the central finite difference of the energy (float64, h = 1e-4)."""
    h = 1e-4
    n = len(ctx.molecule)
    picks = [(0, 0), (n // 2, 1), (n - 1, 2)]
    variants = [ctx.molecule.copy()]
    for atom, axis in picks:
        for sign in (1, -1):
            a = ctx.molecule.copy()
            a.positions[atom, axis] += sign * h
            variants.append(a)
    e, f = ctx.evaluate(ctx.model(torch.float64), variants, torch.float64)
    _not_degenerate(f[:n], "forces")
    for j, (atom, axis) in enumerate(picks):
        fd = -(e[1 + 2 * j] - e[2 + 2 * j]) / (2 * h)
        torch.testing.assert_close(f[atom, axis], fd, rtol=1e-6, atol=1e-6, msg=lambda m: f"F != -dE/dx at atom {atom}, axis {axis}: {m}")


def _check_torchscript(ctx: _Context, dtype: torch.dtype) -> None:
    """e3nn's ``jit.compile`` of the model, saved and reloaded, equals the eager model and
    keeps its backend."""
    from e3nn.util import jit

    from .mace import backend_of

    model = ctx.model(dtype)
    e0, f0 = ctx.evaluate(model, [ctx.molecule], dtype)
    buf = io.BytesIO()
    torch.jit.save(jit.compile(copy.deepcopy(model)), buf)
    buf.seek(0)
    scripted = torch.jit.load(buf)
    e1, f1 = ctx.evaluate(scripted, [ctx.molecule], dtype)
    _close(e1, e0, dtype, "TorchScript energy differs from eager")
    _close(f1, f0, dtype, "TorchScript forces differ from eager")
    if backend_of(scripted) != ctx.name:
        raise AssertionError(f"the TorchScript model says backend {backend_of(scripted)!r}")


def _check_pickle(ctx: _Context, dtype: torch.dtype) -> None:
    """``torch.save`` / ``torch.load`` of the whole model (how MACE saves ``.model`` files)
    gives the same outputs, backend and options."""
    from .mace import backend_of, backend_options_of

    model = ctx.model(dtype)
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    e0, f0 = ctx.evaluate(model, [ctx.molecule], dtype)
    e1, f1 = ctx.evaluate(loaded, [ctx.molecule], dtype)
    _close(e1, e0, dtype, "reloaded energy differs")
    _close(f1, f0, dtype, "reloaded forces differ")
    if (backend_of(loaded), backend_options_of(loaded)) != (ctx.name, backend_options_of(model)):
        raise AssertionError(f"the reloaded model says backend {backend_of(loaded)!r} {backend_options_of(loaded)}")


def _check_dtypes(ctx: _Context, dtype: torch.dtype) -> None:
    """A model built under each default dtype holds only tensors of that dtype and
    returns it; float32 and float64 models with the same weights agree to float32
    rounding (so tables computed at build time are right in both)."""
    for dt in (torch.float32, torch.float64):
        bad = sorted({str(t.dtype) for t in list(ctx.model(dt).parameters()) + list(ctx.model(dt).buffers()) if t.is_floating_point() and t.dtype != dt})
        if bad:
            raise AssertionError(f"model built with default dtype {dt} holds {', '.join(bad)} tensors: build modules in the default dtype")
    single = copy.deepcopy(ctx.model(torch.float32))
    single.load_state_dict(ctx.model(torch.float64).state_dict())
    e32, f32 = ctx.evaluate(single, [ctx.molecule], torch.float32)
    e64, f64 = ctx.evaluate(ctx.model(torch.float64), [ctx.molecule], torch.float64)
    if e32.dtype != torch.float32 or f32.dtype != torch.float32:
        raise AssertionError(f"float32 model returned {e32.dtype} energies, {f32.dtype} forces")
    torch.testing.assert_close(e32.double(), e64, rtol=1e-5, atol=1e-4, msg=lambda m: f"float32 energy far from float64: {m}")
    torch.testing.assert_close(f32.double(), f64, rtol=1e-4, atol=1e-4, msg=lambda m: f"float32 forces far from float64: {m}")


def _isolated(ctx: _Context, z: int, offset: float = 0.0) -> Any:
    import ase

    return ase.Atoms(numbers=[z], positions=[[offset, 0.0, 0.0]])


def _check_empty(ctx: _Context, dtype: torch.dtype) -> None:
    """Graphs without edges. Model level: an isolated atom and a pair farther apart than
    ``r_max`` (nodes without edges) have exactly zero forces, the pair's energy is the sum
    of its atoms', and a batch mixing them with a molecule gives each graph the energy it
    has alone. Module level: each conv site called with no edges returns exact zeros
    (fused: one row per node; unfused: no rows)."""
    import ase

    model = ctx.model(dtype)
    z = list(ctx.config["atomic_numbers"])
    far = 2.0 * float(ctx.config["r_max"]) + 1.0
    pair = ase.Atoms(numbers=[z[0], z[-1]], positions=[[0.0, 0.0, 0.0], [far, 0.0, 0.0]])
    singles = [_isolated(ctx, z[0]), _isolated(ctx, z[-1])]
    e_pair, f_pair = ctx.evaluate(model, [pair], dtype)
    e_single = torch.cat([ctx.evaluate(model, [a], dtype)[0] for a in singles])
    if not torch.isfinite(e_pair).all() or not torch.isfinite(e_single).all():
        raise AssertionError("energy of a graph without edges is not finite")
    torch.testing.assert_close(f_pair, torch.zeros_like(f_pair), rtol=0, atol=0, msg=lambda m: f"atoms without neighbours feel forces: {m}")
    _close(e_pair[0], e_single.sum(), dtype, "energy of two atoms beyond the cutoff is not the sum of theirs")
    systems = [ctx.molecule, singles[0], pair]
    e_mixed, f_mixed = ctx.evaluate(model, systems, dtype)
    alone = [ctx.evaluate(model, [s], dtype) for s in systems]
    _close(e_mixed, torch.cat([e for e, _ in alone]), dtype, "energies in a batch with edge-less graphs differ from each graph alone")
    _close(f_mixed, torch.cat([f for _, f in alone]), dtype, "forces in a batch with edge-less graphs differ from each graph alone")

    gen = torch.Generator().manual_seed(ctx.seed)
    for i, block in model.interactions.named_children():
        module, where, n_nodes = block.conv_tp, f"interactions.{i}.conv_tp", 3
        x1 = torch.randn(n_nodes, module.irreps_in1.dim, generator=gen, dtype=torch.float64).to(dtype)
        x2 = torch.zeros(0, module.irreps_in2.dim, dtype=dtype)
        weight = torch.zeros(0, module.weight_numel, dtype=dtype)
        if bool(getattr(block, "conv_fusion", False)):  # MACE's flag: the conv gathers and scatters itself
            out, rows = module(x1, x2, weight, torch.zeros(2, 0, dtype=torch.long)), n_nodes
        else:
            out, rows = module(x1[:0], x2, weight), 0
        expected = torch.zeros(rows, module.irreps_out.dim, dtype=dtype)
        torch.testing.assert_close(out, expected, rtol=0, atol=0, msg=lambda m: f"{where} with no edges: {m}")


def _check_zero_nodes(ctx: _Context, dtype: torch.dtype) -> None:
    """Plugin site modules called on zero nodes (and zero edges) return empty results of
    the right width, and zero features give exactly zero products. MACE's own modules
    are not called: MACE 0.3.16 cannot evaluate zero atoms itself (its data pipeline and
    its ``SymmetricContraction`` fail), so this is what a backend can get right alone."""
    from .mace._build import site_modules

    model = ctx.model(dtype)
    plugin = [(w, s, m) for w, s, m in site_modules(model) if hasattr(m, "backend_name")]
    if not plugin:
        raise _Skip("the backend puts no module of its own into the model")
    n_el = len(ctx.config["atomic_numbers"])
    for where, site, module in plugin:
        if site == "conv":
            fused = bool(getattr(module, "fused", False))
            x1 = torch.zeros(0, module.irreps_in1.dim, dtype=dtype)
            x2 = torch.zeros(0, module.irreps_in2.dim, dtype=dtype)
            weight = torch.zeros(0, module.weight_numel, dtype=dtype)
            out = module(x1, x2, weight, torch.zeros(2, 0, dtype=torch.long)) if fused else module(x1, x2, weight)
            expected = torch.zeros(0, module.irreps_out.dim, dtype=dtype)
        else:
            irreps_in = o3.Irreps(module.irreps_in)
            feats = torch.zeros(0, irreps_in[0].mul, (irreps_in.lmax + 1) ** 2, dtype=dtype)  # [n, C, (L+1)**2]
            out = module(feats, torch.zeros(0, n_el, dtype=dtype))
            expected = torch.zeros(0, module.irreps_out.dim, dtype=dtype)
            zero = module(torch.zeros(2, *feats.shape[1:], dtype=dtype), torch.eye(n_el, dtype=dtype)[:2])
            torch.testing.assert_close(zero, torch.zeros_like(zero), rtol=0, atol=0, msg=lambda m: f"{where}: product of zero features: {m}")
        torch.testing.assert_close(out, expected, rtol=0, atol=0, msg=lambda m: f"{where} on zero nodes: {m}")


def _check_switch(ctx: _Context, dtype: torch.dtype) -> None:
    """For every other registered backend of the same ``function_family``:
    ``switch_backend`` there and back keeps energies and forces (float64)."""
    from .errors import BackendMismatchError
    from .mace import backend_of, switch_backend
    from .registry import available_backends, get_backend

    family = get_backend(ctx.name).function_family
    if not family:
        raise _Skip("the backend declares no function_family")
    partners = [n for n in available_backends() if n != ctx.name and get_backend(n).function_family == family]
    if not partners:
        raise _Skip(f"no other registered backend of function family {family!r}")
    model = ctx.model(torch.float64)
    e0, f0 = ctx.evaluate(model, [ctx.molecule], torch.float64)
    refused = []
    for other in partners:
        try:
            there = switch_backend(model, other)
        except BackendMismatchError as exc:
            refused.append(f"{other}: {exc}")
            continue
        back = switch_backend(there, ctx.name)
        for label, m, expect in ((f"switched to {other!r}", there, other), (f"switched to {other!r} and back", back, ctx.name)):
            if backend_of(m) != expect:
                raise AssertionError(f"{label}: backend_of says {backend_of(m)!r}")
            e, f = ctx.evaluate(m, [ctx.molecule], torch.float64)
            _close(e, e0, torch.float64, f"{label}: energy changed")
            _close(f, f0, torch.float64, f"{label}: forces changed")
    if len(refused) == len(partners):
        raise _Skip("switch_backend refuses every partner: " + "; ".join(refused))


def _check_extract_config(ctx: _Context, dtype: torch.dtype) -> None:
    """``extract_config`` then ``model_from_config`` (what MACE's tools do to rebuild a
    model) gives a model of the same backend and options that, with the original's
    state dict, computes the same energies and forces (float64)."""
    from .mace import backend_of, backend_options_of
    from .mace._config import extract_config, model_from_config

    model = ctx.model(torch.float64)
    with default_dtype(torch.float64):
        twin = model_from_config(extract_config(model), model_cls=type(model))
    twin.load_state_dict(model.state_dict())
    if (backend_of(twin), backend_options_of(twin)) != (ctx.name, backend_options_of(model)):
        raise AssertionError(f"rebuilt model says backend {backend_of(twin)!r} {backend_options_of(twin)}")
    e0, f0 = ctx.evaluate(model, [ctx.molecule], torch.float64)
    e1, f1 = ctx.evaluate(twin, [ctx.molecule], torch.float64)
    _close(e1, e0, torch.float64, "rebuilt model's energy differs")
    _close(f1, f0, torch.float64, "rebuilt model's forces differ")


def _origin(exc: BaseException) -> str:
    """`` (at file:line in function)`` of the innermost frame of ``exc``'s traceback."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    last = frames[-1]
    return f" (at {last.filename}:{last.lineno} in {last.name})"


_CHECK_FUNCTIONS: dict[str, Callable[[_Context, torch.dtype], None]] = {
    "o3": _check_o3,
    "translation": _check_translation,
    "permutation": _check_permutation,
    "forces": _check_forces,
    "torchscript": _check_torchscript,
    "pickle": _check_pickle,
    "dtypes": _check_dtypes,
    "empty": _check_empty,
    "zero_nodes": _check_zero_nodes,
    "switch": _check_switch,
    "extract_config": _check_extract_config,
}


def check_backend(
    name: str,
    options: Optional[Mapping[str, Any]] = None,
    *,
    checks: Sequence[str] = CHECKS,
    dtypes: Sequence[torch.dtype] = (torch.float32, torch.float64),
    config: Optional[Mapping[str, Any]] = None,
    seed: int = 0,
) -> dict[str, str]:
    """Run the conformance checks every built-in backend passes on backend ``name``.

    Everything is built here from small synthetic systems (no dataset): a
    :func:`small_mace_config` ``ScaleShiftMACE`` (two interactions, hidden ``8x0e + 8x1o``,
    ``max_ell`` 3, correlation 3; ``config`` overrides its arguments) with random weights,
    and a random 10-atom H/C/N/O cluster (:func:`synthetic_molecule`). The backend must be
    registered: installed through an entry point, or in this process with
    :func:`mace_gaunt_plugin.registry.register_backend`.

    Checks (:data:`CHECKS`; tolerances :data:`TOLERANCES` unless stated):

    ``o3``, ``translation``, ``permutation``
        Energy invariant, forces equivariant (two rotations, one rotoreflection, a shift,
        a permutation); the forces must not vanish.
    ``forces``
        Forces equal minus the finite-difference energy gradient (float64).
    ``torchscript``
        e3nn's ``jit.compile``, saved and reloaded, equals eager and keeps the backend.
    ``pickle``
        ``torch.save``/``torch.load`` of the model (MACE's ``.model`` format) round trip.
    ``dtypes``
        Models built under float32 and float64 hold only that dtype and agree.
    ``empty``
        An isolated atom, atoms farther apart than ``r_max``, batches mixing them with a
        molecule, and the conv sites called with no edges.
    ``zero_nodes``
        The backend's own site modules on zero nodes (MACE itself cannot run zero atoms).
    ``switch``
        ``switch_backend`` to each other backend of the same ``function_family`` and back.
    ``extract_config``
        ``extract_config`` / ``model_from_config`` rebuild the same model.

    Parameters
    ----------
    name : str
        The registered backend.
    options : mapping, optional
        Backend options (as for :func:`~mace_gaunt_plugin.build_model`).
    checks : sequence of str
        A subset of :data:`CHECKS` (default: all).
    dtypes : sequence of torch.dtype
        The dtypes the per-dtype checks (:data:`PER_DTYPE`) run in.
    config : mapping, optional
        Overrides for :func:`small_mace_config`.
    seed : int
        Seeds the weights, the molecule and the permutation.

    Returns
    -------
    dict
        ``{check: "passed" | "skipped: why"}`` in :data:`CHECKS` order. A check is skipped
        only when it does not apply (e.g. ``switch`` for a backend without partners).

    Raises
    ------
    BackendCheckError
        Listing every failed check (``check[dtype]``) with its message; the model build
        itself failing is reported as the failure of every check.

    Examples
    --------
    >>> check_backend("grid", checks=("translation", "switch"), dtypes=(torch.float64,))
    {'translation': 'passed', 'switch': 'passed'}
    """
    unknown = [c for c in checks if c not in _CHECK_FUNCTIONS]
    if unknown:
        raise ValueError(f"unknown check(s) {unknown}; the checks are {list(CHECKS)}")
    from .registry import get_backend

    get_backend(name)  # unknown names fail here, with the available ones listed
    cfg = small_mace_config(**dict(config or {}))
    ctx = _Context(name, dict(options or {}), cfg, seed, synthetic_molecule(10, cfg["atomic_numbers"], seed))
    results: dict[str, str] = {}
    failures: dict[str, str] = {}
    for check in [c for c in CHECKS if c in checks]:
        runs = list(dtypes) if check in PER_DTYPE else [torch.float64 if torch.float64 in dtypes or not dtypes else dtypes[0]]
        outcome = "passed"
        for dtype in runs:
            label = f"{check}[{str(dtype).replace('torch.', '')}]" if check in PER_DTYPE else check
            try:
                _CHECK_FUNCTIONS[check](ctx, dtype)
            except _Skip as why:
                outcome = f"skipped: {why}"
                break
            except Exception as exc:  # every failure is reported, with its type and origin
                failures[label] = f"{type(exc).__name__}: {exc}{_origin(exc)}"
                outcome = "failed"
        results[check] = outcome
    if failures:
        raise BackendCheckError(name, failures, results)
    return results
