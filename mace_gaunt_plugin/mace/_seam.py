"""The one seam between mace-gaunt-plugin and MACE (mace-torch 0.3.16) / e3nn 0.4.4.

MACE has no plugin interface, so the plugin substitutes a few names in MACE's own
namespaces and reads a few of its internals. All of it happens here, nowhere else in the
package (a test scans the sources for writes into ``mace``/``e3nn`` modules elsewhere):

Substitutions (temporary, restored on exit, except the first):

1. ``mace.cli.run_train.main``: the plugin's ``main`` (:func:`install_main`, called by the
   start-up hook when that module is imported).
2. ``mace.modules.blocks.TensorProduct``, ``.tp_out_irreps_with_instructions``,
   ``.SymmetricContractionWrapper`` and ``.InteractionBlock.__init__``: the factories of
   :func:`~mace_gaunt_plugin.use_backend`, which MACE's interaction and product blocks
   call by these global names.
3. ``mace.cli.run_train.configure_model``, ``.extract_config_mace_model``,
   ``.init_distributed``, ``.DDP``, ``mace.tools.CheckpointHandler`` and
   ``mace.tools.train.train_one_epoch``: a plugin training run (``mace/_train.py``).

Internals read or written:

4. ``contraction_degree`` set on a plugin product module while MACE's
   ``extract_config_mace_model`` reads the correlation order (:func:`stock_model_config`).
5. The last layer of a radial MLP (e3nn ``FullyConnectedNet``'s ``_Layer``: ``weight``,
   ``h_out``, ``_profiling_str``, the net's ``hs``; MACE ``RadialMLP.net[-1]``) when the
   ``sparse`` backend compacts a model (:func:`shrink_radial_mlp`).
6. ``CheckpointIO._parse_checkpoint_path`` and ``CheckpointBuilder`` when a plugin run
   reads and writes checkpoints (:func:`checkpoint_handler_class`).
7. ``mace.modules.irreps_tools.tp_out_irreps_with_instructions`` (MACE's own conv layout),
   called by ``conv_weights=path`` and ``switch_backend`` to build exactly MACE's layout.
8. The energy forward of ``MACE`` and ``ScaleShiftMACE``, which the LAMMPS core replicates
   layer by layer (:mod:`._layered`): the submodules it calls (``atomic_energies_fn``,
   ``node_embedding``, ``spherical_harmonics``, ``radial_embedding``, ``interactions``,
   ``products``, ``readouts``, ``scale_shift``, ``pair_repulsion_fn``) with the keyword
   arguments MACE passes them. :data:`LAYERED_PROBLEMS` names every name those forwards
   read that 0.3.16's did not (a feature the replica would miss) and every changed
   signature; only the LAMMPS core needs it (:func:`require_layered_forward`), so it is
   kept out of :data:`PROBLEMS`.

At import, :data:`PROBLEMS` lists every way the installed MACE differs from what the
seam relies on (a name gone, another signature, MACE's code no longer looking a
substituted name up); every function here that would use a seam calls
:func:`require_compatible`, which raises one :class:`IncompatibleMaceError` naming all of
them. Importing this module never raises for that reason, so ``import mace.cli.run_train``
still works for stock use.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Optional

import mace
import mace.modules
import mace.modules.blocks
import mace.tools
import mace.tools.checkpoint
import mace.tools.scripts_utils
import torch

from ..errors import IncompatibleMaceError

__all__ = [
    "PROBLEMS",
    "SEAMS",
    "TESTED_MACE",
    "checkpoint_handler_class",
    "current",
    "incompatibilities",
    "install_main",
    "LAYERED_PROBLEMS",
    "layered_forward_problems",
    "layered_model_classes",
    "require_layered_forward",
    "scales_and_shifts",
    "require_compatible",
    "shrink_radial_mlp",
    "stock_model_config",
    "substituted",
]

#: The MACE release every seam was written against and is tested with.
TESTED_MACE = "0.3.16"


@dataclass(frozen=True)
class Seam:
    """One place where the plugin meets MACE.

    ``target``: dotted path of the object; ``parameters``: the leading parameter names the
    plugin passes or binds (``None``: not called with arguments by the plugin);
    ``looked_up_by``: dotted paths of MACE functions whose code must name the target's last
    component (a substitution only has an effect if MACE looks the name up at call time);
    ``substitute``: whether :func:`substituted` may replace it.
    """

    target: str
    parameters: Optional[tuple[str, ...]] = None
    looked_up_by: tuple[str, ...] = ()
    substitute: bool = False


_BLOCKS = "mace.modules.blocks"
_RUN_TRAIN = "mace.cli.run_train"
_CKPT = "mace.tools.checkpoint"

SEAMS: tuple[Seam, ...] = (
    Seam(f"{_RUN_TRAIN}.main", (), substitute=True),
    Seam(f"{_RUN_TRAIN}.run", ("args",)),
    Seam(
        f"{_BLOCKS}.TensorProduct",
        ("irreps_in1", "irreps_in2", "irreps_out", "instructions", "shared_weights", "internal_weights",
         "use_conv_fusion", "cueq_config", "oeq_config"),  # fmt: skip
        substitute=True,
    ),
    Seam(f"{_BLOCKS}.tp_out_irreps_with_instructions", ("irreps1", "irreps2", "target_irreps"), substitute=True),
    Seam(
        f"{_BLOCKS}.SymmetricContractionWrapper",
        ("irreps_in", "irreps_out", "correlation", "num_elements", "cueq_config", "oeq_config", "use_reduced_cg"),
        looked_up_by=(f"{_BLOCKS}.EquivariantProductBasisBlock.__init__",),
        substitute=True,
    ),
    Seam(f"{_BLOCKS}.InteractionBlock.__init__", looked_up_by=(), substitute=True),
    Seam(f"{_RUN_TRAIN}.configure_model", ("args",), looked_up_by=(f"{_RUN_TRAIN}.run",), substitute=True),
    Seam(f"{_RUN_TRAIN}.extract_config_mace_model", ("model",), looked_up_by=(f"{_RUN_TRAIN}.run",), substitute=True),
    Seam(f"{_RUN_TRAIN}.init_distributed", ("args",), looked_up_by=(f"{_RUN_TRAIN}.run",), substitute=True),
    Seam(f"{_RUN_TRAIN}.DDP", None, looked_up_by=(f"{_RUN_TRAIN}.run",), substitute=True),
    Seam("mace.tools.CheckpointHandler", None, looked_up_by=(f"{_RUN_TRAIN}.run",), substitute=True),
    Seam(
        "mace.tools.train.train_one_epoch",
        ("model", "loss_fn", "data_loader", "optimizer", "epoch"),
        looked_up_by=("mace.tools.train.train",),
        substitute=True,
    ),
    Seam("mace.tools.scripts_utils.extract_config_mace_model", ("model",)),
    # conv_weights=path and node_path build MACE's own conv layout (backends/_sphere_sites.py, mace/_switch.py)
    Seam("mace.modules.irreps_tools.tp_out_irreps_with_instructions", ("irreps1", "irreps2", "target_irreps")),
    Seam(f"{_CKPT}.CheckpointBuilder.create_checkpoint", ("state",)),
    Seam(f"{_CKPT}.CheckpointBuilder.load_checkpoint", ("state", "checkpoint", "strict")),
    Seam(f"{_CKPT}.CheckpointIO.load", ("self", "path", "device")),
    Seam(f"{_CKPT}.CheckpointIO._parse_checkpoint_path", ("self", "path")),
    Seam("mace.tools.build_default_arg_parser", ()),
    Seam("mace.tools.check_args", ("args",)),
    Seam("mace.tools.get_tag", ("name", "seed")),
)


def _resolve(dotted: str) -> tuple[Any, str]:
    """(owner, attribute) of a dotted path: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            owner: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:-1]:
            owner = getattr(owner, name)
        return owner, parts[-1]
    raise AttributeError(dotted)


def _get(dotted: str) -> Any:
    owner, attr = _resolve(dotted)
    return getattr(owner, attr)


def _names_in_code(func: Any) -> set[str]:
    code = getattr(inspect.unwrap(func), "__code__", None)
    if code is None:
        return set()
    return set(code.co_names) | {c for c in code.co_consts if isinstance(c, str)}


def _seam_problems(seam: Seam) -> list[str]:
    try:
        obj = _get(seam.target)
    except AttributeError:
        return [f"{seam.target} is gone"]
    problems = []
    if seam.parameters is not None:
        try:
            found = tuple(inspect.signature(inspect.unwrap(obj)).parameters)
        except (TypeError, ValueError):
            found = ()
        if found[: len(seam.parameters)] != seam.parameters:
            problems.append(f"{seam.target} takes ({', '.join(found)}), the plugin expects ({', '.join(seam.parameters)}, ...)")
    last = seam.target.rsplit(".", 1)[-1]
    for user in seam.looked_up_by:
        try:
            names = _names_in_code(_get(user))
        except AttributeError:
            problems.append(f"{user} is gone")
            continue
        if last not in names:
            problems.append(f"{user} no longer looks up {last!r} by name, so substituting {seam.target} has no effect")
    return problems


def _interaction_problems() -> list[str]:
    """Every MACE interaction block must build its conv through the names of seam 2 and
    honour ``conv_fusion``; ``InteractionBlock.__init__`` must call ``_setup``."""
    problems = []
    if "_setup" not in _names_in_code(mace.modules.blocks.InteractionBlock.__init__):
        problems.append("mace.modules.blocks.InteractionBlock.__init__ no longer calls _setup")
    for name, cls in sorted(mace.modules.interaction_classes.items()):
        setup = _names_in_code(getattr(cls, "_setup", None))
        for needed in ("TensorProduct", "tp_out_irreps_with_instructions"):
            if needed not in setup:
                problems.append(f"{name}._setup no longer looks up {needed!r} by name")
        if "conv_fusion" not in _names_in_code(cls.forward):
            problems.append(f"{name}.forward no longer reads conv_fusion")
    return problems


def incompatibilities() -> list[str]:
    """Every difference between the installed MACE and what the seams rely on (empty: compatible)."""
    problems = [p for seam in SEAMS for p in _seam_problems(seam)]
    return problems + _interaction_problems()



def require_compatible() -> None:
    """Raise :class:`IncompatibleMaceError` naming every problem in :data:`PROBLEMS`, if any."""
    if PROBLEMS:
        raise IncompatibleMaceError(getattr(mace, "__version__", "?"), TESTED_MACE, list(PROBLEMS))


def _substitutable(target: str) -> None:
    if not any(seam.target == target and seam.substitute for seam in SEAMS):
        raise KeyError(f"{target} is not a substitution the seam declares; add it to SEAMS (with its checks) first")


def current(target: str) -> Any:
    """What a declared substitution point holds now (MACE's own object, or a substitute)."""
    _substitutable(target)
    return _get(target)


@contextlib.contextmanager
def substituted(target: str, value: Any) -> Iterator[None]:
    """Put ``value`` at the declared substitution point ``target`` for the duration (restored on exit)."""
    require_compatible()
    _substitutable(target)
    owner, attr = _resolve(target)
    previous = getattr(owner, attr)
    setattr(owner, attr, value)
    try:
        yield
    finally:
        setattr(owner, attr, previous)


def install_main(module: Any, main: Callable[..., None]) -> None:
    """Seam 1: make ``main`` the ``main`` of the ``mace.cli.run_train`` module being imported
    (idempotent; ``main`` checks :func:`require_compatible` itself, so stock imports work)."""
    if getattr(getattr(module, "main", None), "_mace_gaunt_plugin", False):
        return
    module.main = main


def stock_model_config(model: torch.nn.Module, product: Any) -> dict[str, Any]:
    """Seam 4: MACE's ``extract_config_mace_model(model)``. MACE reads the correlation order
    from its own contraction classes (``contractions[0].weights``, or cuEquivariance's
    ``contraction_degree``); a plugin product module (``product``, or ``None``) gets a
    temporary ``contraction_degree`` from its ``correlation``."""
    require_compatible()
    extract = mace.tools.scripts_utils.extract_config_mace_model
    if product is None or hasattr(product, "contraction_degree") or not hasattr(product, "correlation"):
        return extract(model)
    product.contraction_degree = int(product.correlation)
    try:
        return extract(model)
    finally:
        del product.contraction_degree


def _last_linear(mlp: torch.nn.Module, why: Callable[[str], Exception]) -> torch.nn.Module:
    from e3nn.nn import FullyConnectedNet

    if isinstance(mlp, FullyConnectedNet):
        return list(mlp.children())[-1]
    net = getattr(mlp, "net", None)  # mace.modules.radial.RadialMLP
    if isinstance(net, torch.nn.Sequential) and isinstance(net[-1], torch.nn.Linear):
        return net[-1]
    raise why(f"a radial MLP of type {type(mlp).__name__}: the seam knows e3nn's FullyConnectedNet and MACE's RadialMLP")


def radial_mlp_width(mlp: torch.nn.Module, why: Callable[[str], Exception]) -> int:
    """Number of outputs of a radial MLP (the conv weights per edge)."""
    last = _last_linear(mlp, why)
    return int(last.out_features) if isinstance(last, torch.nn.Linear) else int(last.weight.shape[1])


def shrink_radial_mlp(mlp: torch.nn.Module, cols: torch.Tensor, why: Callable[[str], Exception]) -> None:
    """Seam 5: keep only output columns ``cols`` of a radial MLP, in place (exact: its last
    layer is linear). ``why`` makes the error for an MLP the seam does not know."""
    last = _last_linear(mlp, why)
    k = int(cols.numel())
    with torch.no_grad():
        if isinstance(last, torch.nn.Linear):
            last.weight = torch.nn.Parameter(last.weight.index_select(0, cols).clone(), requires_grad=last.weight.requires_grad)
            if last.bias is not None:
                last.bias = torch.nn.Parameter(last.bias.index_select(0, cols).clone(), requires_grad=last.bias.requires_grad)
            last.out_features = k
        else:  # e3nn _Layer: x @ (weight / const), weight [h_in, h_out]
            last.weight = torch.nn.Parameter(last.weight.index_select(1, cols).clone(), requires_grad=last.weight.requires_grad)
            last.h_out = k
            last._profiling_str = repr(last)
    if hasattr(mlp, "hs"):
        mlp.hs = list(mlp.hs[:-1]) + [k]


def checkpoint_handler_class(
    write: Callable[[dict], dict],
    check: Callable[[Mapping[str, Any]], None],
    read: Callable[[str, Any], dict],
) -> type:
    """Seam 6: MACE's ``CheckpointHandler`` whose checkpoints pass through ``write`` before
    they are saved, are read with ``read(path, device)`` and are checked with ``check``
    before their state is loaded."""
    require_compatible()
    ckpt = mace.tools.checkpoint

    class PluginCheckpointBuilder(ckpt.CheckpointBuilder):
        @staticmethod
        def create_checkpoint(state: Any) -> dict:
            return write(ckpt.CheckpointBuilder.create_checkpoint(state))

        @staticmethod
        def load_checkpoint(state: Any, checkpoint: dict, strict: bool) -> None:
            check(checkpoint)
            ckpt.CheckpointBuilder.load_checkpoint(state, checkpoint, strict)

    class PluginCheckpointIO(ckpt.CheckpointIO):
        def load(self, path: str, device: Any = None) -> tuple[dict, int]:
            info = self._parse_checkpoint_path(path)
            if info is None:
                raise RuntimeError(f"Cannot find path '{path}'")
            logging.info(f"Loading checkpoint: {info.path}")
            return read(info.path, device), info.epochs

    class PluginCheckpointHandler(mace.tools.CheckpointHandler):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.io = PluginCheckpointIO(*args, **kwargs)
            self.builder = PluginCheckpointBuilder()

    return PluginCheckpointHandler


_MODELS = "mace.modules.models"

#: Seam 8: every name (attribute, global, string constant) the energy forwards of mace-torch
#: 0.3.16 read; :class:`~mace_gaunt_plugin.mace._layered.LayeredMACE` replicates them all.
_LAYERED_FORWARD_NAMES: dict[str, frozenset[str]] = {
    f"{_MODELS}.MACE.forward": frozenset(
        "append atomic_energies_fn atomic_numbers cat cell displacement dtype embedding_readout embedding_specs "
        "enumerate get_atomic_virials_stresses get_outputs hasattr int64 interaction_kwargs interactions is_lammps "
        "items joint_embedding lammps_class lammps_natoms len lengths node_embedding node_heads num_atoms_arange "
        "num_graphs pair_repulsion_fn positions prepare_graph products radial_embedding readouts scatter_sum shape "
        "spherical_harmonics squeeze stack sum to torch vectors zeros_like zip "
        "batch edge_index node_attrs pair_repulsion".split()
    ),
    f"{_MODELS}.ScaleShiftMACE.forward": frozenset(
        "append atleast_1d atomic_energies_fn atomic_numbers cat cell clone displacement double dtype "
        "embedding_readout embedding_specs enumerate get_atomic_virials_stresses get_outputs hasattr int64 "
        "interaction_kwargs interactions is_lammps items joint_embedding lammps_class lammps_natoms len lengths "
        "node_embedding node_heads num_atoms_arange num_graphs pair_repulsion_fn positions prepare_graph products "
        "radial_embedding readouts scale_shift scatter_sum shape spherical_harmonics squeeze stack sum to torch "
        "vectors zeros_like zip batch edge_index node_attrs pair_repulsion".split()
    ),
}

#: Seam 8: the modules the replica calls, with the leading parameters it passes (by keyword
#: for interactions and products, by position for the others).
_LAYERED_CALLS: tuple[Seam, ...] = (
    Seam(f"{_BLOCKS}.RadialEmbeddingBlock.forward", ("self", "edge_lengths", "node_attrs", "edge_index", "atomic_numbers")),
    Seam(f"{_BLOCKS}.EquivariantProductBasisBlock.forward", ("self", "node_feats", "sc", "node_attrs")),
    Seam(f"{_BLOCKS}.AtomicEnergiesBlock.forward", ("self", "x")),
    Seam(f"{_BLOCKS}.LinearNodeEmbeddingBlock.forward", ("self", "node_attrs")),
    Seam(f"{_BLOCKS}.LinearReadoutBlock.forward", ("self", "x", "heads")),
    Seam(f"{_BLOCKS}.NonLinearReadoutBlock.forward", ("self", "x", "heads")),
    Seam(f"{_BLOCKS}.ScaleShiftBlock.forward", ("self", "x", "head")),
    Seam("mace.modules.radial.ZBLBasis.forward", ("self", "x", "node_attrs", "edge_index", "atomic_numbers")),
)

#: the keywords the replica passes every interaction block (as MACE's forward does)
_INTERACTION_KEYWORDS = ("node_attrs", "node_feats", "edge_attrs", "edge_feats", "edge_index", "cutoff", "first_layer")


def layered_forward_problems() -> list[str]:
    """Every difference between the installed MACE and what seam 8 replicates (empty: none)."""
    problems = [p for seam in _LAYERED_CALLS for p in _seam_problems(seam)]
    for target, known in _LAYERED_FORWARD_NAMES.items():
        try:
            found = _names_in_code(_get(target))
        except AttributeError:
            problems.append(f"{target} is gone")
            continue
        new = sorted(found - known)
        if new:
            problems.append(f"{target} now reads {', '.join(new)}, which the layered LAMMPS core does not replicate")
    for name, cls in sorted(mace.modules.interaction_classes.items()):
        try:
            params = set(inspect.signature(cls.forward).parameters)
        except (TypeError, ValueError):
            params = set()
        missing = [k for k in _INTERACTION_KEYWORDS if k not in params]
        if missing:
            problems.append(f"{name}.forward no longer takes {', '.join(missing)}")
    return problems


def require_layered_forward() -> None:
    """Raise :class:`IncompatibleMaceError` naming every problem in :data:`LAYERED_PROBLEMS`, if any."""
    if LAYERED_PROBLEMS:
        raise IncompatibleMaceError(getattr(mace, "__version__", "?"), TESTED_MACE, list(LAYERED_PROBLEMS))


def layered_model_classes() -> tuple[type, ...]:
    """Seam 8: the model classes whose forward the layered LAMMPS core replicates (exactly these, not subclasses)."""
    import mace.modules.models as models

    return (models.MACE, models.ScaleShiftMACE)


def scales_and_shifts(model: torch.nn.Module) -> bool:
    """Seam 8: whether ``model``'s forward scales and shifts the interaction energies
    (``ScaleShiftMACE``) rather than summing them with E0 (``MACE``)."""
    import mace.modules.models as models

    return type(model) is models.ScaleShiftMACE


# Last, once every function above exists: importing ``mace.cli.run_train`` here runs the
# start-up hook, which calls :func:`install_main` of this (partly imported) module.
#: What :func:`incompatibilities` found when this module was imported.
PROBLEMS: tuple[str, ...] = tuple(incompatibilities())
#: What :func:`layered_forward_problems` found when this module was imported.
LAYERED_PROBLEMS: tuple[str, ...] = tuple(layered_forward_problems())
