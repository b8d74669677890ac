"""``pair_style mliap unified`` for MACE models with any TP backend.

:class:`MACEGauntMLIAP` is what ``mace_gaunt_create_lammps_model`` writes (pickled).
LAMMPS reads a file whose name does not end in ``.pt``/``.pth`` with plain ``pickle``,
which imports this module, so no ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is needed in the
LAMMPS process. The model core inside is TorchScript (loaded with ``torch.jit.load``);
an export with ``engine="eager"`` runs the same core as a plain ``torch.nn.Module`` built
from the eager model in the file instead (faster or slower depending on the system;
see benchmarks/results/lammps_engine_cpu).

Two execution paths:

* **plain ML-IAP data object** (any LAMMPS built with ML-IAP + PYTHON), one MPI rank:
  ghost atoms are mapped to the local atoms they image through their atom IDs, so a
  multi-layer model runs on the local graph and the pair forces are exact. This needs
  the running LAMMPS instance, handed over once with :func:`attach_lammps` (from Python)
  or with two lines in the input deck (see :data:`INPUT_DECK_LINES`). The model runs on
  the device chosen at export (``cpu`` or ``cuda``); inputs and outputs cross once per
  step.
* **KOKKOS data object** (LAMMPS built with KOKKOS, run with ``-k on -sf kk``): the
  model runs on the device arrays and exchanges node features between layers with the
  data object's ``forward_exchange``/``reverse_exchange`` (mace's own route; LAMMPS
  releases after 4 Feb 2025), which also works across MPI ranks.

Anything the wrapper cannot compute exactly stops the run with a message that says why
(several ranks on the plain path, an element the model does not know, a missing
instance handle, a corrupt file).
"""

from __future__ import annotations

import hashlib
import io
from typing import Any, Optional

import numpy as np
import torch

import mace  # noqa: F401  (sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD before e3nn loads)

from ._errors import LAMMPSInterfaceError, ModelFileError

try:  # the base class LAMMPS documents; only an interface, it holds no behaviour
    from lammps.mliap.mliap_unified_abc import MLIAPUnified
except ImportError:  # exporting needs no LAMMPS; the pickle names only this module's class

    class MLIAPUnified:  # type: ignore[no-redef]
        """Stand-in with the attributes of ``lammps.mliap.mliap_unified_abc.MLIAPUnified``."""

        def __init__(self, interface=None, element_types=None, ndescriptors=None, nparams=None, rcutfac=None):
            self.interface = interface
            self.element_types = element_types
            self.ndescriptors = ndescriptors
            self.nparams = nparams
            self.rcutfac = rcutfac


__all__ = ["MACEGauntMLIAP", "attach_lammps", "load_model_file", "INPUT_DECK_LINES", "FORMAT_VERSION", "ENGINES"]

#: Bumped when the pickled state changes incompatibly.
FORMAT_VERSION = 1

#: How the plain path runs the model core: the TorchScript core, or the eager core built
#: from the eager model in the file (files written before engines existed: torchscript).
ENGINES = ("torchscript", "eager")

#: Every element LAMMPS may name in ``pair_coeff``; the model's own subset is checked at
#: the first force call, so an unknown element gets a message naming the model's elements.
from ase.data import chemical_symbols as _SYMBOLS  # noqa: E402

ELEMENT_TYPES: list[str] = list(_SYMBOLS[1:])

#: The two input-deck lines that hand the running LAMMPS instance to the wrapper in a
#: standalone ``lmp -in`` run (before the first ``run``/``minimize``).
INPUT_DECK_LINES = (
    'python mgp_attach input 1 SELF format p here '
    '"from lammps_interface.mliap_unified import attach_lammps as mgp_attach"\n'
    "python mgp_attach invoke\n"
)

_ATTACHED: Any = None


def attach_lammps(lmp: Any) -> Any:
    """Hand the running LAMMPS instance to the wrapper (needed by the plain ML-IAP path,
    which reads atom IDs). ``lmp`` is a ``lammps.lammps`` object or the ``SELF`` capsule
    that LAMMPS' ``python`` command passes. Returns the ``lammps`` object.

    >>> # from lammps import lammps; lmp = lammps(); attach_lammps(lmp)
    """
    global _ATTACHED
    from lammps import lammps

    if not isinstance(lmp, lammps):
        lmp = lammps(ptr=lmp)
    _ATTACHED = lmp
    return lmp


def load_model_file(path: str) -> "MACEGauntMLIAP":
    """Read an exported model file (for ``load_unified`` + ``pair_style mliap unified EXISTS 0``)."""
    import pickle

    try:
        with open(path, "rb") as f:
            obj = pickle.load(f)
    except FileNotFoundError:
        raise ModelFileError(f"model file {path!r} does not exist; export one with mace_gaunt_create_lammps_model") from None
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise ModelFileError(f"model file {path!r} is not a readable model ({exc}); re-export it") from exc
    if not isinstance(obj, MACEGauntMLIAP):
        raise ModelFileError(f"{path!r} holds a {type(obj).__name__}, not a MACEGauntMLIAP model")
    return obj


def _sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


class MACEGauntMLIAP(MLIAPUnified):
    """ML-IAP unified model running a MACE model (any TP backend) in LAMMPS.

    Build it with :meth:`from_model` (``mace_gaunt_create_lammps_model`` does).
    Attributes read by LAMMPS: ``element_types`` (every element; the model's own are in
    ``model_elements``), ``rcutfac = r_max / 2``, ``ndescriptors = nparams = 1``.
    """

    def __init__(
        self,
        core_bytes: bytes,
        eager_bytes: bytes,
        atomic_numbers: list[int],
        r_max: float,
        dtype: str,
        device: str,
        backend: str,
        head: str,
        engine: str = "torchscript",
    ) -> None:
        super().__init__(None, ELEMENT_TYPES, 1, 1, 0.5 * float(r_max))
        if engine not in ENGINES:
            raise LAMMPSInterfaceError(f"engine must be one of {ENGINES}, not {engine!r}")
        self._state = {
            "format_version": FORMAT_VERSION,
            "core_bytes": core_bytes,
            "core_sha256": _sha256(core_bytes),
            "eager_bytes": eager_bytes,
            "eager_sha256": _sha256(eager_bytes),
            "atomic_numbers": [int(z) for z in atomic_numbers],
            "r_max": float(r_max),
            "dtype": dtype,
            "device": device,
            "backend": backend,
            "head": head,
            "engine": engine,
        }
        self._setup()

    # ------------------------------------------------------------------ building
    @classmethod
    def from_model(
        cls,
        model: torch.nn.Module,
        dtype: torch.dtype = torch.float64,
        device: str = "cpu",
        head: Optional[str] = None,
        engine: str = "torchscript",
    ) -> "MACEGauntMLIAP":
        """Wrap an eager MACE model (deep-copied, converted to ``dtype``); ``engine`` picks
        how LAMMPS runs it (:data:`ENGINES`)."""
        import copy

        from mace_gaunt_plugin import backend_of

        from ._core import script_core

        if device not in ("cpu", "cuda"):
            raise LAMMPSInterfaceError(f"device must be 'cpu' or 'cuda', not {device!r}")
        for attr in ("atomic_numbers", "r_max", "interactions"):
            if not hasattr(model, attr):
                raise LAMMPSInterfaceError(
                    f"{type(model).__name__} is not a MACE energy model (no {attr!r}); "
                    "give the eager .model file that mace_run_train saved, not *_compiled.model"
                )
        heads = list(getattr(model, "heads", None) or ["Default"])
        head = heads[-1] if head is None else head
        if head not in heads:
            raise LAMMPSInterfaceError(f"model has no head {head!r}; its heads are {heads}")
        model = copy.deepcopy(model).to("cpu").to(dtype).eval()
        eager = io.BytesIO()
        torch.save(model, eager)
        # e3nn's compiler replaces submodules in place: script a copy
        core = script_core(copy.deepcopy(model), head=heads.index(head))
        buf = io.BytesIO()
        torch.jit.save(core, buf)
        return cls(
            core_bytes=buf.getvalue(),
            eager_bytes=eager.getvalue(),
            atomic_numbers=[int(z) for z in model.atomic_numbers],
            r_max=float(model.r_max),
            dtype=str(dtype).replace("torch.", ""),
            device=device,
            backend=backend_of(model),
            head=head,
            engine=engine,
        )

    # ------------------------------------------------------------ (un)pickling
    def __getstate__(self) -> dict:
        return dict(self._state)

    def __setstate__(self, state: dict) -> None:
        if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
            found = state.get("format_version") if isinstance(state, dict) else None
            raise ModelFileError(
                f"model file format {found!r} is not the one this lammps_interface reads "
                f"({FORMAT_VERSION}); re-export it with mace_gaunt_create_lammps_model"
            )
        for key in ("core", "eager"):
            if _sha256(state[f"{key}_bytes"]) != state[f"{key}_sha256"]:
                raise ModelFileError(f"model file is corrupt (checksum of its {key} model differs); re-export it")
        MLIAPUnified.__init__(self, None, ELEMENT_TYPES, 1, 1, 0.5 * state["r_max"])
        self._state = state
        self._setup()

    def _setup(self) -> None:
        st = self._state
        self._eager_cache: Optional[torch.nn.Module] = None
        self.engine = st.get("engine", "torchscript")
        if self.engine not in ENGINES:
            raise ModelFileError(f"model file names an unknown engine {self.engine!r}; re-export it")
        if self.engine == "eager":
            from ._core import MACEEdgeCore

            model = self._eager_model()
            heads = list(getattr(model, "heads", None) or ["Default"])
            self._core = MACEEdgeCore(model, head=heads.index(st["head"]))
        else:
            try:
                self._core = torch.jit.load(io.BytesIO(st["core_bytes"]), map_location="cpu")
            except Exception as exc:
                raise ModelFileError(f"model file holds an unreadable TorchScript core ({exc}); re-export it") from exc
        self._core.eval()
        self._eager: Optional[torch.nn.Module] = None
        self._device = torch.device("cpu")
        self._on_device = False
        self.model_elements = [_SYMBOLS[z] for z in st["atomic_numbers"]]
        table = np.full(len(ELEMENT_TYPES), -1, dtype=np.int64)
        for k, z in enumerate(st["atomic_numbers"]):
            table[z - 1] = k
        self._species_of_elem = table
        self.backend = st["backend"]
        self.dtype = st["dtype"]
        self.device = st["device"]

    def _eager_model(self) -> torch.nn.Module:
        """The eager MACE model stored in the file (loaded once; needs this plugin)."""
        if self._eager_cache is None:
            try:
                model = torch.load(io.BytesIO(self._state["eager_bytes"]), map_location="cpu", weights_only=False)
            except Exception as exc:
                raise ModelFileError(f"model file holds an unreadable eager model ({exc}); re-export it") from exc
            self._eager_cache = model.eval()
        return self._eager_cache

    def __repr__(self) -> str:
        st = self._state
        return (
            f"MACEGauntMLIAP(backend={st['backend']!r}, elements={self.model_elements}, "
            f"r_max={st['r_max']}, dtype={st['dtype']}, device={st['device']!r}, engine={self.engine!r})"
        )

    # --------------------------------------------------------------- ML-IAP API
    def compute_gradients(self, data: Any) -> None:
        """Unused by unified models."""

    def compute_descriptors(self, data: Any) -> None:
        """Unused by unified models."""

    def compute_forces(self, data: Any) -> None:
        """Energies, per-atom energies and pair forces for one LAMMPS force call."""
        if "kokkos" in type(data).__module__.lower():
            self._compute_kokkos(data)
        else:
            self._compute_plain(data)

    # ------------------------------------------------------------- plain path
    def _move_to_device(self) -> None:
        if self._on_device:
            return
        if self.device == "cuda" and not torch.cuda.is_available():
            raise LAMMPSInterfaceError(
                "this model was exported with --device cuda but torch sees no CUDA GPU here; "
                "re-export with --device cpu or run on a GPU machine"
            )
        self._device = torch.device(self.device)
        self._core = self._core.to(self._device)
        self._on_device = True

    def _check_species(self, elems: np.ndarray) -> np.ndarray:
        if elems.size and elems.min() < 0:
            raise LAMMPSInterfaceError(
                "atoms of a type mapped to NULL in pair_coeff are in the model's graph; give every atom type an element"
            )
        if elems.size and elems.max() >= len(ELEMENT_TYPES):
            raise LAMMPSInterfaceError(f"LAMMPS passed element indices {sorted(set(elems.tolist()))} out of range")
        species = self._species_of_elem[elems]
        if (species < 0).any():
            unknown = sorted({ELEMENT_TYPES[e] for e in elems[species < 0]})
            raise LAMMPSInterfaceError(
                f"pair_coeff maps atom types to element(s) {', '.join(unknown)}, which this model does not know; "
                f"the model's elements are {', '.join(self.model_elements)}: fix pair_coeff or use another model"
            )
        return species

    def _lammps_for(self, data: Any) -> Any:
        lmp = _ATTACHED
        if lmp is None or getattr(lmp, "lmp", None) is None:
            raise LAMMPSInterfaceError(
                "the plain ML-IAP path needs the running LAMMPS instance to read atom IDs: call "
                "lammps_interface.attach_lammps(lmp) before the first run (Python), or put these lines "
                "in the input deck before 'run':\n" + INPUT_DECK_LINES
            )
        if lmp.extract_setting("world_size") != 1:
            raise LAMMPSInterfaceError(
                f"the plain ML-IAP path runs on one MPI rank only (this run has {lmp.extract_setting('world_size')}): "
                "a message-passing model needs the KOKKOS build's exchange path for several ranks "
                "(LAMMPS with KOKKOS, run with -k on -sf kk), or run independent single-rank simulations"
            )
        if lmp.extract_setting("nlocal") != data.nlocal or lmp.extract_setting("nall") != data.ntotal:
            raise LAMMPSInterfaceError(
                "the attached LAMMPS instance is not the one running this pair style; "
                "call attach_lammps(lmp) with the instance that runs it"
            )
        return lmp

    def _compute_plain(self, data: Any) -> None:
        nlocal, ntotal, nlist = int(data.nlocal), int(data.ntotal), int(data.nlistatoms)
        if nlist == 0:
            data.energy = 0.0
            return
        lmp = self._lammps_for(data)
        self._move_to_device()

        iatoms = np.asarray(data.iatoms)[:nlist].astype(np.int64)
        species = self._check_species(np.asarray(data.elems)[iatoms].astype(np.int64))
        npairs = int(data.npairs)
        if npairs:
            pair_i = np.asarray(data.pair_i).astype(np.int64)
            jatoms = np.asarray(data.jatoms).astype(np.int64)
            rij = np.asarray(data.rij)
        else:
            pair_i = jatoms = np.zeros(0, dtype=np.int64)
            rij = np.zeros((0, 3))

        # ghost -> the local atom it images, through atom IDs (unique per local atom)
        tags = np.asarray(lmp.numpy.extract_atom("id", nelem=ntotal)).astype(np.int64)
        local_tags = tags[:nlocal]
        if local_tags.size and local_tags.min() <= 0:
            raise LAMMPSInterfaceError("atoms have no IDs (atom_modify id no): the wrapper needs atom IDs")
        size = int(max(local_tags.max(initial=0), tags[jatoms].max(initial=0))) + 1
        local_of_tag = np.full(size, -1, dtype=np.int64)
        local_of_tag[local_tags] = np.arange(nlocal)
        owner = local_of_tag[tags[jatoms]]
        if (owner < 0).any():
            raise LAMMPSInterfaceError(
                "a neighbour atom has no local image on this rank; the plain ML-IAP path needs every atom "
                "on one MPI rank (use the KOKKOS build for several ranks)"
            )
        node_of_local = np.full(nlocal, -1, dtype=np.int64)
        node_of_local[iatoms] = np.arange(nlist)
        senders = node_of_local[owner]
        receivers = node_of_local[pair_i]
        if (senders < 0).any():
            raise LAMMPSInterfaceError("a neighbour's local image is not in the ML-IAP atom list (pair_coeff NULL type?)")

        dev = self._device
        vectors = torch.from_numpy(-rij).to(dev)
        edge_index = torch.from_numpy(np.stack([senders, receivers])).to(dev)
        node_energy, edge_forces = self._core(vectors, edge_index, torch.from_numpy(species).to(dev))
        out = torch.cat([node_energy, edge_forces.to(torch.float64).reshape(-1)]).cpu().numpy()
        eatoms = out[:nlist]
        data.eatoms = np.ascontiguousarray(eatoms)
        data.energy = float(eatoms.sum())
        if npairs:
            data.update_pair_forces(np.ascontiguousarray(out[nlist:].reshape(npairs, 3)))

    # ------------------------------------------------------------ KOKKOS path
    def _compute_kokkos(self, data: Any) -> None:
        """mace's route on the KOKKOS data object: eager model, device arrays, ghost node
        features filled by ``forward_exchange`` between layers."""
        if not hasattr(data, "forward_exchange"):
            raise LAMMPSInterfaceError(
                "this LAMMPS' KOKKOS ML-IAP data object has no forward_exchange (LAMMPS 4 Feb 2025 and older), "
                "so a message-passing model cannot run on it exactly: run without KOKKOS "
                "(drop -k on -sf kk; the plain path runs the model on the GPU too) or use a newer LAMMPS"
            )
        from mace.calculators.lammps_mliap_mace import MACEEdgeForcesWrapper

        natoms, ntotal, npairs = int(data.nlocal), int(data.ntotal), int(data.npairs)
        if natoms == 0:
            data.energy = 0.0
            return
        elems = torch.as_tensor(data.elems).to(torch.int64)
        device = elems.device
        if self._eager is None:
            self._eager = MACEEdgeForcesWrapper(self._eager_model(), head=self._state["head"]).to(device)
            self._species_table_kk = torch.from_numpy(self._species_of_elem).to(device)
        species = self._species_table_kk[elems]
        if bool((species < 0).any()):
            self._check_species(elems.cpu().numpy())
        dtype = self._eager.r_max.dtype
        batch = {
            "vectors": torch.as_tensor(data.rij).to(dtype),
            "node_attrs": torch.nn.functional.one_hot(species, num_classes=len(self.model_elements)).to(dtype),
            "edge_index": torch.stack(
                [torch.as_tensor(data.pair_j).to(torch.int64), torch.as_tensor(data.pair_i).to(torch.int64)]
            ),
            "batch": torch.zeros(natoms, dtype=torch.int64, device=device),
            "lammps_class": data,
            "natoms": (natoms, ntotal - natoms),
        }
        _, atom_energies, pair_forces = self._eager(batch)
        if npairs == 0:
            pair_forces = torch.zeros((0, 3), dtype=torch.float64, device=device)
        eatoms = torch.as_tensor(data.eatoms)
        eatoms.copy_(atom_energies[:natoms].detach())
        data.energy = float(atom_energies[:natoms].sum())
        data.update_pair_forces_gpu(pair_forces.detach().to(torch.float64).contiguous())
