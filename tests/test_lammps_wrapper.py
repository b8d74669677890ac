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
    other sizes than the one it was traced on, every layer on the whole graph (one-rank
    route) or on depth prefixes (several-ranks route), and without edges."""
    import torch

    from lammps_interface._aot import AOTCore, _sample_graph, _sample_layers
    from lammps_interface._core import full_graph_sizes

    compiled = mu.load_model_file(str(exported_model(backend, engine="aotinductor")[1]))
    scripted = mu.load_model_file(str(exported[backend][1]))
    assert compiled.engine == "aotinductor" and isinstance(compiled._core, AOTCore)
    assert compiled.receptive_field == scripted.receptive_field
    no_edges = (torch.zeros(0, 3, dtype=torch.float64), torch.zeros(2, 0, dtype=torch.long), torch.tensor([0, 4, 1]))
    big, small = _sample_graph(11, 60, 5, R_MAX, "cpu", seed=3), _sample_graph(2, 2, 5, R_MAX, "cpu", seed=4)
    pruned = _sample_layers(big, 2)
    cases = [(big, full_graph_sizes(2, 11, 60)), pruned, (small, full_graph_sizes(2, 2, 2)), _sample_layers(small, 2)]
    cases += [(no_edges, full_graph_sizes(2, 3, 0)), (no_edges, ([2, 3], [0]))]
    for graph, (nodes, edges) in cases:
        got, want = compiled._core(*graph, nodes, edges), scripted._core(*graph, nodes, edges)
        for name, a, b in zip(("node energies", "edge forces"), got, want):
            assert a.shape == b.shape and a.dtype == b.dtype == torch.float64, name
            assert name == "edge forces" or a.shape[0] == nodes[0]
            if b.numel():
                err = float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))
                assert err < 1e-12, f"{name}, {graph[2].numel()} nodes, sizes {nodes} {edges}: {err:.2e}"
    # the prefixes are inputs, not baked in: pruning changes the result
    (graph, _), sizes = pruned, full_graph_sizes(2, 11, pruned[0][0].shape[0])
    assert not torch.allclose(compiled._core(*graph, *sizes)[1], compiled._core(*pruned[0], *pruned[1])[1])


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


# ------------------------------------------------- several ranks: the pruned graph
class FakeRank:
    """The plain ML-IAP data object and the ``lammps`` instance of one MPI rank whose
    subdomain is the slab ``lo <= x/L < hi`` of an orthorhombic periodic box: its local
    atoms, ghost copies of every periodic image (of its own atoms and of other ranks')
    within ``shell`` of the subdomain, and the full neighbour lists of local *and* ghost
    atoms (``pair_style ... 1``), as LAMMPS builds them."""

    lmp = object()

    def __init__(self, atoms, r_max: float, shell: float, lo: float, hi: float, rank: int) -> None:
        from ase.data import atomic_masses
        from scipy.spatial import cKDTree

        lengths = np.diag(atoms.cell.array)
        frac = atoms.get_scaled_positions()
        is_local = (frac[:, 0] >= lo) & (frac[:, 0] < hi)
        reach = np.ceil(shell / lengths).astype(int)
        sub_lo, sub_hi = np.array([lo, 0, 0]) * lengths, np.array([hi, 1, 1]) * lengths
        local = np.flatnonzero(is_local)
        ghost_x, ghost_id = [], []
        for s in np.ndindex(*(2 * reach + 1)):
            shift = (np.array(s) - reach) * lengths
            x = atoms.positions + shift
            inside = np.all((x >= sub_lo - shell) & (x < sub_hi + shell), axis=1)
            if not any(np.array(s) - reach):
                inside &= ~is_local
            ghost_x.append(x[inside])
            ghost_id.append(np.flatnonzero(inside))
        ghost_x, ghost_id = np.concatenate(ghost_x), np.concatenate(ghost_id)
        self.x = np.concatenate([atoms.positions[local], ghost_x])
        self.tags = np.concatenate([local, ghost_id]).astype(np.int32) + 1
        self.nlocal = self.nlistatoms = len(local)
        self.ntotal = len(self.x)
        self.natomneigh = self.ntotal
        pairs = np.array(sorted(cKDTree(self.x).query_pairs(r_max)), dtype=np.int64).reshape(-1, 2)
        pairs = np.concatenate([pairs, pairs[:, ::-1]])
        self.pair_i, self.jatoms = pairs[:, 0].astype(np.int32), pairs[:, 1].astype(np.int32)
        self.rij = self.x[self.jatoms] - self.x[self.pair_i]
        self.npairs = len(pairs)
        self.iatoms = np.arange(self.nlocal, dtype=np.int32)
        self.elems = (atoms.numbers[self.tags - 1] - 1).astype(np.int32)
        # one atom type per element, with its standard mass (for the wrapper's mass check)
        elements, types = np.unique(self.elems, return_inverse=True)
        self.types = (types + 1).astype(np.int32)
        self.masses = np.concatenate([[0.0], atomic_masses[elements + 1]])
        self.f = np.zeros((self.ntotal, 3))
        self.fij = np.zeros((self.npairs, 3))
        self.box = (list(atoms.cell.array.min(axis=0) * 0), list(lengths), 0.0, 0.0, 0.0, [1, 1, 1], 0)
        self.sub = (list(sub_lo), list(sub_hi))
        self.rank = rank
        outer = self

        class _Numpy:
            @staticmethod
            def extract_atom(name: str, nelem: int) -> np.ndarray:
                return {"id": outer.tags, "x": outer.x, "type": outer.types, "mass": outer.masses}[name][:nelem]

        self.numpy = _Numpy()

    # the lammps instance
    def extract_setting(self, name: str) -> int:
        settings = {"world_size": 2, "world_rank": self.rank, "nlocal": self.nlocal, "nall": self.ntotal, "triclinic": 0}
        settings.update(ntypes=len(self.masses) - 1, rmass_flag=0)
        return settings[name]

    def extract_box(self):
        return self.box

    def extract_global(self, name: str):
        return {"sublo": self.sub[0], "subhi": self.sub[1]}[name]

    # the data object
    def update_pair_forces(self, fij: np.ndarray) -> None:
        self.fij = fij
        np.add.at(self.f, self.pair_i, fij)
        np.add.at(self.f, self.jatoms, -fij)


@pytest.mark.parametrize("backend", mgp.available_backends())
def test_pruned_ranks_match_ase_and_the_unpruned_core(backend: str, attached, tmp_path, monkeypatch) -> None:
    """Two fake ranks (x slabs of 3.6 A, thinner than the 6 A receptive field): the pruned
    graph (own images mapped to local atoms, layers pruned by hop depth) gives each rank's
    local energies of the unpruned core (every layer on every local and ghost atom), and
    both ranks together give ASE's energy, per-atom energies, forces and virial to 1e-10;
    the timing file shows the pruning."""
    import torch
    from ase.build import bulk

    from lammps_interface._timing import read_layer_counts

    monkeypatch.setenv("MGP_LAMMPS_TIMING", str(tmp_path / "t"))
    model_path, model_file = exported_model(backend, "tiny_r3_cuo")
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.numbers[np.random.default_rng(7).permutation(len(atoms))[:12]] = 8  # two species: senders matter
    atoms.rattle(0.05, seed=7)
    atoms.wrap()
    ref = harness.ase_reference(str(model_path), atoms)
    energy, eatoms, forces, virial = 0.0, np.zeros(len(atoms)), np.zeros((len(atoms), 3)), np.zeros((3, 3))
    for rank, (lo, hi) in enumerate([(0.0, 0.5), (0.5, 1.0)]):
        wrapper = mu.load_model_file(model_file)
        data = FakeRank(atoms, 3.0, 2 * 3.0 + 2.0, lo, hi, rank)
        assert 0 < data.nlocal < len(atoms) and data.ntotal > 10 * data.nlocal
        mu._ATTACHED = data
        wrapper.compute_forces(data)
        energy += data.energy
        local_ids = data.tags[: data.nlocal] - 1
        eatoms[local_ids] = data.eatoms
        np.add.at(forces, data.tags - 1, data.f)  # reverse communication
        virial -= data.rij.T @ data.fij  # fdotr: sum over pairs of (x_i - x_j) f_ij
        # the unpruned core: every layer on all local and ghost atoms, edges in LAMMPS' order
        species = torch.from_numpy(wrapper._check_species(data.elems.astype(np.int64)))
        vectors = torch.from_numpy(-data.rij)
        edge_index = torch.from_numpy(np.stack([data.jatoms, data.pair_i]).astype(np.int64))
        full, _ = wrapper._core(vectors, edge_index, species, [data.nlocal, data.ntotal], [data.npairs])
        assert harness.max_relative_error(data.eatoms, full.numpy()) < 1e-12
        ((read1, upd1, e1), (read2, upd2, e2)), = read_layer_counts(tmp_path / f"t.rank{rank}")
        assert upd2 == data.nlocal and read2 == upd1 and read1 < data.ntotal and e2 < e1 < data.npairs
        assert read1 < 0.5 * data.ntotal, (read1, data.ntotal)  # own images are not nodes
    for key, got in (("energy", energy), ("energies", eatoms), ("forces", forces), ("virial", virial)):
        err = harness.max_relative_error(got, ref[key])
        assert err < 1e-10, f"{key}: max relative deviation {err:.2e}"


def test_export_refuses_a_model_class_the_core_does_not_replicate() -> None:
    import torch
    from mace.modules.models import ScaleShiftMACE

    from mace_gaunt_plugin.testing import default_dtype, small_mace_config

    class MyMACE(ScaleShiftMACE):
        pass

    with default_dtype(torch.float64):
        model = mgp.build_model("e3nn", **small_mace_config())
    model.__class__ = MyMACE
    with pytest.raises(LAMMPSInterfaceError, match="this model is a MyMACE"):
        mu.MACEGauntMLIAP.from_model(model)


def test_layered_graph_on_a_chain() -> None:
    """Atoms on a line, A0 local (ID 1), ghosts: another rank's atoms B, C, D (IDs 2, 3, 4)
    one, two and three hops away, and an image of A0 (ID 1) next to D. Pairs are both
    directions of each neighbour pair, with the ghosts' own lists. Two layers: A0 (depth
    0), B (1), C (2) are nodes, D is dropped (depth 3), the image of A0 is A0; layer 1
    updates A0 and B from the edges into them, layer 2 A0 only."""
    from lammps_interface._graph import layered_graph

    tags = np.array([1, 2, 3, 4, 1])  # LAMMPS atoms: A0 local, then ghosts B, C, D, image of A0
    chain = [(0, 1), (1, 2), (2, 3), (3, 4)]
    pair_i = np.array([i for a, b in chain for i in (a, b)])
    jatoms = np.array([j for a, b in chain for j in (b, a)])
    g = layered_graph(tags, 1, pair_i, jatoms, 2)
    assert g.atoms.tolist() == [0, 1, 2]
    assert g.nodes == [1, 2] and g.edges == [1]
    edges = list(zip(g.senders.tolist(), g.receivers.tolist()))
    assert edges == [(1, 0), (0, 1), (2, 1)]  # into A0 first, then into B
    assert [(int(pair_i[p]), int(jatoms[p])) for p in g.pairs] == [(0, 1), (1, 0), (1, 2)]
    assert g.layer_counts() == [(3, 2, 3), (2, 1, 1)]
    # an image of D next to A0 is another node (one hop), D itself stays three hops away
    tags6 = np.append(tags, 4)
    g = layered_graph(tags6, 1, np.append(pair_i, [0, 5]), np.append(jatoms, [5, 0]), 2)
    assert g.atoms.tolist() == [0, 1, 5, 2] and g.nodes == [1, 3]
    with pytest.raises(ValueError, match="atom IDs"):
        layered_graph(np.zeros(5, dtype=np.int64), 1, pair_i, jatoms, 2)


@pytest.mark.parametrize("model_class", ["MACE", "ScaleShiftMACE"])
@pytest.mark.parametrize("interaction", ["RealAgnosticResidualInteractionBlock", "RealAgnosticInteractionBlock"])
def test_layered_core_is_mace_forward(model_class: str, interaction: str) -> None:
    """The core's layer-by-layer forward gives MACE's own node energies and forces (whole
    graph), for both model classes, with pair repulsion, two heads (the second evaluated)
    and a first layer without self-connection; pruning a depth-sorted graph gives the
    local energies of the unpruned run."""
    import torch
    from mace import modules

    from lammps_interface._aot import _sample_graph, _sample_layers
    from lammps_interface._core import MACEEdgeCore, full_graph_sizes
    from mace_gaunt_plugin.testing import default_dtype, small_mace_config

    with default_dtype(torch.float64):
        torch.manual_seed(1)
        cfg = small_mace_config(atomic_numbers=(1, 6, 7, 8, 29), interaction=interaction, pair_repulsion=True,
                                heads=["a", "b"], atomic_energies=np.array([[-1.0, -2.0, -3.0, -4.0, -5.0], [-1.5, -2.5, -3.5, -4.5, -5.5]]))
        if model_class == "MACE":
            cfg = {k: v for k, v in cfg.items() if k not in ("atomic_inter_scale", "atomic_inter_shift")}
        else:
            cfg.update(atomic_inter_scale=[1.0, 1.3], atomic_inter_shift=[0.0, 0.1])
        model = mgp.build_model("e3nn", model_cls=getattr(modules, model_class), **cfg).eval()
    vectors, edge_index, species = _sample_graph(11, 60, 5, R_MAX, "cpu", seed=5)
    data = {
        "positions": torch.zeros(11, 3), "shifts": vectors, "unit_shifts": torch.zeros_like(vectors),
        "edge_index": edge_index, "node_attrs": torch.nn.functional.one_hot(species, 5).double(),
        "batch": torch.zeros(11, dtype=torch.long), "ptr": torch.tensor([0, 11]), "cell": torch.zeros(3, 3),
        "head": torch.tensor([1]),
    }  # fmt: skip
    out = model(data, compute_force=False, compute_edge_forces=True)
    core = MACEEdgeCore(model, head=1)
    energies, edge_forces = core(vectors, edge_index, species, *full_graph_sizes(2, 11, 60))
    assert float((energies - out["node_energy"]).abs().max()) < 1e-12
    # MACE's edge_forces are dE/dv, the core's -dE/dv (the force on the receiver)
    assert float((edge_forces + out["edge_forces"]).abs().max()) < 1e-12 * float(edge_forces.abs().max())
    (v, ei, sp), (nodes, edges) = _sample_layers((vectors, edge_index, species), 2)
    pruned = core(v, ei, sp, nodes, edges)[0]
    unpruned = core(v, ei, sp, [nodes[0], 11], [int(v.shape[0])])[0]
    assert float((pruned - unpruned).abs().max()) < 1e-12
