"""The ML-IAP wrapper's ghost-atom mapping and refusals, without LAMMPS: a fake ML-IAP
data object built the way LAMMPS builds it (local atoms, ghost copies of periodic
images with the IDs of the atoms they image, a full neighbour list of the local atoms)
must give the ASE ``MACECalculator`` energy, per-atom energies and forces."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import mace_gaunt_plugin as mgp
from _lammps_models import R_MAX, exported_model
from lammps_interface import export_model, harness
from lammps_interface import mliap_unified as mu
from lammps_interface._errors import LAMMPSInterfaceError, ModelFileError


class FakeLammps:
    """What the wrapper reads from the ``lammps`` instance."""

    lmp = object()

    def __init__(self, tags: np.ndarray, nlocal: int, elems: np.ndarray, world_size: int = 1) -> None:
        from ase.data import atomic_masses

        self.tags, self.nlocal, self.world_size = tags, nlocal, world_size
        # one atom type per element, with its standard mass (as a data file would have)
        elements, types = np.unique(np.asarray(elems)[:nlocal], return_inverse=True)
        self.types = (types + 1).astype(np.int32)
        self.masses = np.concatenate([[0.0], atomic_masses[elements + 1]])
        outer = self

        class _Numpy:
            @staticmethod
            def extract_atom(name: str, nelem: int) -> np.ndarray:
                arrays = {"id": outer.tags, "type": outer.types, "mass": outer.masses}
                return arrays[name][:nelem]

        self.numpy = _Numpy()

    def extract_setting(self, name: str) -> int:
        settings = {"world_size": self.world_size, "world_rank": 0, "nlocal": self.nlocal, "nall": len(self.tags)}
        settings.update(ntypes=len(self.masses) - 1, rmass_flag=0)
        return settings[name]


class FakeData:
    """The plain ML-IAP data object for ``atoms`` (element index = Z - 1)."""

    def __init__(self, atoms, r_max: float) -> None:
        from matscipy.neighbours import neighbour_list

        n = len(atoms)
        i, j, shifts, rij = neighbour_list("ijSD", atoms, r_max)
        ghost: dict[tuple, int] = {}
        jatoms = []
        for a, b, s in zip(i, j, shifts):
            if not s.any():
                jatoms.append(b)
                continue
            jatoms.append(ghost.setdefault((b, tuple(s)), n + len(ghost)))
        self.nlocal = self.nlistatoms = self.natomneigh = n  # no ghost atoms' own lists (pair_style ... 0)
        self.ntotal = n + len(ghost)
        self.tags = np.concatenate([np.arange(1, n + 1), [b + 1 for (b, _) in ghost]]).astype(np.int32)
        z = np.concatenate([atoms.numbers, [atoms.numbers[b] for (b, _) in ghost]])
        self.elems = (z - 1).astype(np.int32)
        self.iatoms = np.arange(n, dtype=np.int32)
        self.npairs = len(i)
        self.pair_i, self.jatoms, self.rij = i.astype(np.int32), np.array(jatoms, dtype=np.int32), rij
        self.f = np.zeros((self.ntotal, 3))

    def update_pair_forces(self, fij: np.ndarray) -> None:
        np.add.at(self.f, self.pair_i, fij)
        np.add.at(self.f, self.jatoms, -fij)

    def local_forces(self) -> np.ndarray:
        """Ghost forces added to their owners (LAMMPS' reverse communication)."""
        f = self.f[: self.nlocal].copy()
        np.add.at(f, self.tags[self.nlocal :] - 1, self.f[self.nlocal :])
        return f


@pytest.fixture(scope="module")
def exported():
    return {backend: exported_model(backend) for backend in mgp.available_backends()}


@pytest.fixture
def attached():
    old = mu._ATTACHED
    yield
    mu._ATTACHED = old


def _cu2o():
    from ase import Atoms

    cell = np.array([[3.9, 0.0, 0.0], [1.3, 3.7, 0.0], [-0.9, 1.1, 4.1]])  # lengths < R_MAX: self images
    return Atoms("CuOCuO", scaled_positions=[[0.05, 0.1, 0.2], [0.55, 0.45, 0.6], [0.3, 0.8, 0.85], [0.8, 0.2, 0.4]],
                 cell=cell, pbc=True)


@pytest.mark.parametrize("engine", ["torchscript", "aotinductor"])
@pytest.mark.parametrize("backend", mgp.available_backends())
def test_ghost_mapping_matches_ase(backend: str, engine: str, exported, attached) -> None:
    model_path, model_file = exported[backend] if engine == "torchscript" else exported_model(backend, engine=engine)
    with open(model_file, "rb") as f:
        wrapper = pickle.load(f)
    atoms = _cu2o()
    data = FakeData(atoms, R_MAX)
    assert data.ntotal > data.nlocal  # ghosts exist
    mu._ATTACHED = FakeLammps(data.tags, data.nlocal, data.elems)
    wrapper.compute_forces(data)
    ref = harness.ase_reference(str(model_path), atoms)
    assert harness.max_relative_error(data.energy, ref["energy"]) < 1e-10
    assert harness.max_relative_error(data.eatoms, ref["energies"]) < 1e-10
    assert harness.max_relative_error(data.local_forces(), ref["forces"]) < 1e-10


def test_force_call_timing(exported, attached, tmp_path, monkeypatch) -> None:
    """``MGP_LAMMPS_TIMING=PATH``: one ``total model`` line per force call, results
    unchanged; unset, no file is written."""
    from lammps_interface._timing import read_timings

    _, model_file = exported[mgp.available_backends()[0]]
    atoms = _cu2o()
    energies = []
    for timing in (None, tmp_path / "t"):
        if timing is None:
            monkeypatch.delenv("MGP_LAMMPS_TIMING", raising=False)
        else:
            monkeypatch.setenv("MGP_LAMMPS_TIMING", str(timing))
        wrapper = mu.load_model_file(model_file)
        for _ in range(2):
            data = FakeData(atoms, R_MAX)
            mu._ATTACHED = FakeLammps(data.tags, data.nlocal, data.elems)
            wrapper.compute_forces(data)
            energies.append(data.energy)
        if timing is None:
            assert list(tmp_path.iterdir()) == []
    assert len(set(energies)) == 1
    calls = read_timings(tmp_path / "t")
    assert len(calls) == 2 and all(0.0 < model <= total for total, model in calls)


def test_force_call_timer_file_per_rank(tmp_path) -> None:
    """Several ranks write PATH.rankR, one rank PATH; opening twice keeps the first file."""
    import torch

    from lammps_interface._timing import ForceCallTimer, read_timings

    for rank, size, name in ((1, 2, "t.rank1"), (0, 1, "t")):
        timer = ForceCallTimer(str(tmp_path / "t"))
        timer.call_started()
        timer.open(rank, size, torch.device("cpu"))
        timer.open(rank + 5, size, torch.device("cpu"))
        timer.model_started()
        timer.model_finished()
        timer.call_finished()
        assert len(read_timings(tmp_path / name)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t", "t.rank1"]
    assert not ForceCallTimer(None).enabled


def test_refusals(exported, attached) -> None:
    _, model_file = exported[mgp.available_backends()[0]]
    wrapper = mu.load_model_file(model_file)
    atoms = _cu2o()
    data = FakeData(atoms, R_MAX)
    mu._ATTACHED = None
    with pytest.raises(LAMMPSInterfaceError, match="attach_lammps"):
        wrapper.compute_forces(data)
    mu._ATTACHED = FakeLammps(data.tags, data.nlocal, data.elems)
    data.elems[0] = 25  # Fe
    with pytest.raises(LAMMPSInterfaceError, match="Fe.*model's elements are H, C, N, O, Cu"):
        wrapper.compute_forces(data)
    data = FakeData(atoms, R_MAX)
    data.tags[data.nlocal] = 99  # a ghost whose atom lives on another rank
    mu._ATTACHED = FakeLammps(data.tags, data.nlocal, data.elems)
    with pytest.raises(LAMMPSInterfaceError, match="no local image"):
        wrapper.compute_forces(data)


def test_model_file_errors(exported, tmp_path) -> None:
    _, model_file = exported[mgp.available_backends()[0]]
    with pytest.raises(ModelFileError, match="does not exist"):
        mu.load_model_file(str(tmp_path / "nope.pkl"))
    blob = bytearray(open(model_file, "rb").read())
    blob[len(blob) // 2 : len(blob) // 2 + 32] = bytes(32)
    (tmp_path / "bad.pkl").write_bytes(bytes(blob))
    with pytest.raises(ModelFileError, match="corrupt"):
        mu.load_model_file(str(tmp_path / "bad.pkl"))
    with pytest.raises(LAMMPSInterfaceError, match="torch.load"):
        export_model(str(exported[mgp.available_backends()[0]][0]), str(tmp_path / "x.pt"))


def test_engine_recorded_in_the_file(exported, tmp_path) -> None:
    """Files without an engine (written before engines existed) run TorchScript; an
    unknown engine is refused on load and on export."""
    _, model_file = exported[mgp.available_backends()[0]]
    wrapper = mu.load_model_file(str(model_file))
    state = wrapper.__getstate__()
    assert state["engine"] == "torchscript"
    del state["engine"]
    (tmp_path / "old.pkl").write_bytes(pickle.dumps(_Pickled(state)))
    assert mu.load_model_file(str(tmp_path / "old.pkl")).engine == "torchscript"
    state["engine"] = "turbo"
    (tmp_path / "turbo.pkl").write_bytes(pickle.dumps(_Pickled(state)))
    with pytest.raises(ModelFileError, match="unknown engine"):
        mu.load_model_file(str(tmp_path / "turbo.pkl"))
    with pytest.raises(LAMMPSInterfaceError, match="engine must be"):
        export_model(str(exported[mgp.available_backends()[0]][0]), str(tmp_path / "y.mliap"), engine="turbo")


class _Pickled:
    """Pickles as a MACEGauntMLIAP with the given state (to write hand-edited files)."""

    def __init__(self, state: dict) -> None:
        self.state = state

    def __reduce__(self):
        return (object.__new__, (mu.MACEGauntMLIAP,), self.state)


# ------------------------------------------------------------- aotinductor engine
@pytest.mark.parametrize("backend", mgp.available_backends())
def test_aotinductor_core_equals_torchscript_core(backend: str, exported) -> None:
    """The compiled package computes what the TorchScript core computes, on graphs of
    other sizes than the one it was traced on, with the energy of every node (one-rank
    route) or of a prefix of the nodes (several-ranks route), and without edges."""
    import torch

    from lammps_interface._aot import AOTCore, _sample_graph

    compiled = mu.load_model_file(str(exported_model(backend, engine="aotinductor")[1]))
    scripted = mu.load_model_file(str(exported[backend][1]))
    assert compiled.engine == "aotinductor" and isinstance(compiled._core, AOTCore)
    assert compiled.receptive_field == scripted.receptive_field
    no_edges = (torch.zeros(0, 3, dtype=torch.float64), torch.zeros(2, 0, dtype=torch.long), torch.tensor([0, 4, 1]))
    cases = [(_sample_graph(11, 60, 5, R_MAX, "cpu", seed=3), n) for n in (-1, 4, 11)]
    cases += [(_sample_graph(2, 2, 5, R_MAX, "cpu", seed=4), 1), (no_edges, -1), (no_edges, 2)]
    for graph, n_energy in cases:
        got, want = compiled._core(*graph, n_energy), scripted._core(*graph, n_energy)
        for name, a, b in zip(("node energies", "edge forces"), got, want):
            assert a.shape == b.shape and a.dtype == b.dtype == torch.float64, name
            if b.numel():
                err = float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))
                assert err < 1e-12, f"{name}, {graph[2].numel()} nodes, n_energy {n_energy}: {err:.2e}"
    # differentiating fewer nodes changes the forces (the mask is an input, not baked in)
    g = cases[0][0]
    assert not torch.allclose(compiled._core(*g, 4)[1], compiled._core(*g, 11)[1])


def test_aotinductor_refusals(exported, tmp_path) -> None:
    """Native code for another torch version, a changed package, a missing package, a
    device the package was not compiled for, and compiling when LAMMPS starts are refused."""
    import torch

    backend = mgp.available_backends()[0]
    state = mu.load_model_file(str(exported_model(backend, engine="aotinductor")[1])).__getstate__()
    assert state["aot_torch"] == torch.__version__ and state["aot_device"] == "cpu"

    def load(name: str, **changes):
        edited = dict(state, **changes)
        for key in [k for k, v in changes.items() if v is None]:
            del edited[key]
        (tmp_path / name).write_bytes(pickle.dumps(_Pickled(edited)))
        return mu.load_model_file(str(tmp_path / name))

    with pytest.raises(ModelFileError, match="compiled with torch 1.0.0, this process runs"):
        load("old_torch.pkl", aot_torch="1.0.0")
    blob = bytearray(state["aot_bytes"])
    blob[len(blob) // 2] ^= 0xFF
    with pytest.raises(ModelFileError, match="corrupt .checksum of its aot model"):
        load("changed.pkl", aot_bytes=bytes(blob))
    with pytest.raises(ModelFileError, match="holds no compiled core"):
        load("missing.pkl", aot_bytes=None, aot_sha256=None)
    with pytest.raises(LAMMPSInterfaceError, match="compiled for cpu, not cuda: re-export with --device cuda"):
        load("ok.pkl")._core.to(torch.device("cuda"))
    safe = tmp_path / "m.safetensors"
    mgp.save_model(torch.load(exported[backend][0], weights_only=False), safe)
    with pytest.raises(LAMMPSInterfaceError, match="compiles at export"):
        mu.load_safe_model(str(safe), engine="aotinductor")


def test_aotinductor_compile_errors_are_reported(tmp_path) -> None:
    """A model the compile cannot rebuild from data fails the export with the reason."""
    import torch

    from lammps_interface._aot import compile_core

    with pytest.raises(LAMMPSInterfaceError, match="rebuilds the model from its data"):
        compile_core(torch.nn.Linear(2, 2), head=0, device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(LAMMPSInterfaceError, match="needs a CUDA GPU"):
            compile_core(torch.nn.Linear(2, 2), head=0, device="cuda")
