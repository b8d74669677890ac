"""What a TP backend is: a named object that builds TorchScript-able modules for the two
MACE sites from irreps alone.

Sites
-----
``conv``
    The interaction convolution: node features (``irreps_node``) times edge spherical
    harmonics (``irreps_edge``) with per-edge weights from the radial MLP, projected to
    ``irreps_out``. Module contract: attributes ``irreps_in1``, ``irreps_in2``,
    ``irreps_out`` (``e3nn.o3.Irreps``), ``weight_numel`` (int) and ``fused`` (bool);
    ``forward(x1, x2, weight, edge_index=None)``. Without ``edge_index``, ``x1`` is
    ``[n_edges, irreps_in1.dim]`` (already gathered from senders) and the result is per
    edge. With ``edge_index`` (``[2, n_edges]``, senders first), ``x1`` is per node and the
    result ``[n_nodes, irreps_out.dim]`` is already summed onto the receivers.
``product``
    The many-body product basis (MACE's symmetric contraction). Module contract:
    ``forward(node_feats [n, channels, (L+1)**2], node_attrs [n, n_elements])`` returns
    ``[n, irreps_out.dim]``.

A backend returns ``None`` for a site it leaves to MACE's stock code.

The backend contract
--------------------
Everything a backend must do, checked by
:func:`mace_gaunt_plugin.testing.check_backend` (run it on yours):

1. **Registration.** A :class:`TPBackend` (instance, or a class / zero-argument factory
   returning one) under the entry-point group ``mace_gaunt_plugin.backends``, the entry
   point's name equal to ``backend.name``; or, to try it without packaging,
   :func:`mace_gaunt_plugin.registry.register_backend` in the running process.
2. **Site modules subclass** :class:`BackendModule` and call
   ``BackendModule.__init__(self, backend.name, site, options)`` with ``site`` ``"conv"``
   or ``"product"``: the model then records its backend (``backend_of``, saved models,
   LAMMPS export). Anything else at a site the backend claims stops the build.
3. **``instructions`` may be ``None``** in :meth:`TPBackend.build_conv`: MACE passes its
   ``tp_out_irreps_with_instructions`` list only when :meth:`TPBackend.conv_irreps_out`
   returns ``None``, and :func:`~mace_gaunt_plugin.switch_backend` rebuilds modules from
   irreps alone (``None``). Build from the irreps; refuse with a message if you cannot.
4. **Options are JSON.** Option values (after :meth:`Option.convert`) must survive
   ``json.dumps``/``json.loads`` unchanged: bool, int, float, str, lists of them. They
   are stored on every module as a JSON string (TorchScript carries it).
5. **Modules are built in the default dtype** (``torch.get_default_dtype()``): create
   every floating buffer and parameter in it (tables computed in numpy float64 are
   converted with ``.to(torch.get_default_dtype())``). MACE sets the default dtype
   before building, and float32 and float64 models must both work.
6. **Attributes that rebuilding reads.** ``switch_backend`` and ``extract_config``
   (which MACE's tools use) read, on conv modules: ``irreps_in1``, ``irreps_in2``,
   ``irreps_out`` (``o3.Irreps``), ``weight_numel`` (int), ``fused`` (bool); on product
   modules: ``irreps_in``, ``irreps_out``, ``correlation`` (int) and ``num_elements``
   (int). Parameters must be the same for two backends of one ``function_family``.
7. **TorchScript.** MACE writes ``*_compiled.model`` with e3nn's ``jit.compile``: every
   site module must script. Do not write ``from __future__ import annotations`` in the
   module that defines them (TorchScript reads annotations as types and rejects the
   strings it makes); annotate ``forward`` fully, and class attributes that are not
   tensors or submodules (``fused: bool``).
8. **Empty inputs.** Graphs without edges (an isolated atom, a LAMMPS step with no
   pairs) and zero nodes must give empty or zero results, never an error.
9. **Pickling.** Site modules are saved inside MACE's ``.model`` pickles: their class
   must be importable by its module path (not defined in ``__main__`` or a function).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
from e3nn import o3

from ..errors import BackendOptionError, UnsupportedIrrepsError

__all__ = [
    "Option",
    "TPBackend",
    "BackendModule",
    "parse_bool",
    "require_natural_parity",
    "require_uniform_multiplicity",
]

SITES = ("conv", "product")


def parse_bool(value: Any) -> bool:
    """``True``/``False`` from a bool or a command-line string."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


@dataclass(frozen=True)
class Option:
    """One backend option: its default, how to parse it from a string, what it means."""

    name: str
    default: Any
    help: str
    parse: Callable[[Any], Any] = str
    choices: Optional[Sequence[Any]] = None

    def convert(self, backend: str, value: Any) -> Any:
        try:
            out = self.parse(value)
        except (TypeError, ValueError) as exc:
            raise BackendOptionError(f"TP backend {backend!r}: bad value {value!r} for option {self.name!r}: {exc}") from None
        if self.choices is not None and out not in self.choices:
            raise BackendOptionError(
                f"TP backend {backend!r}: option {self.name!r} must be one of {list(self.choices)}, got {value!r}"
            )
        return out


class BackendModule(torch.nn.Module):
    """Base of every module a plugin backend puts into a MACE model. It records which
    backend built it and with which options, so a saved model knows its backend."""

    backend_name: str
    backend_options: str  # JSON, so TorchScript can carry it
    site: str

    def __init__(self, backend_name: str, site: str, options: Mapping[str, Any]) -> None:
        super().__init__()
        self.backend_name = backend_name
        self.site = site
        self.backend_options = json.dumps(dict(options), sort_keys=True)

    def options(self) -> dict[str, Any]:
        """The backend options this module was built with."""
        return json.loads(self.backend_options)

    def __reduce_ex__(self, protocol: Any) -> tuple:
        # Pickles (saved models, deepcopy) go through a stable function that names the
        # backend and its package when the class cannot be imported (see _pickling.py).
        from .._pickling import reduce_backend_module

        return reduce_backend_module(self)


# TorchScript reads a module class's annotations as types; ``from __future__ import
# annotations`` makes them strings, which it rejects for subclasses that declare none.
BackendModule.__annotations__ = {"backend_name": str, "backend_options": str, "site": str}


@dataclass
class TPBackend:
    """A tensor-product backend. Subclasses override :meth:`build_conv`,
    :meth:`build_product` and, when the conv output layout differs from MACE's,
    :meth:`conv_irreps_out`.

    ``function_family`` names the function class a backend computes: two backends with
    the same family and the same weights compute the same function, which
    :func:`mace_gaunt_plugin.switch_backend` relies on.
    """

    name: str
    description: str = ""
    options: Sequence[Option] = field(default_factory=tuple)
    function_family: str = ""

    def resolve_options(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults filled in, strings parsed; unknown names refused with the known ones listed."""
        known = {opt.name: opt for opt in self.options}
        unknown = sorted(set(given) - set(known))
        if unknown:
            listed = ", ".join(f"{o.name} (default {o.default!r})" for o in self.options) or "none"
            raise BackendOptionError(
                f"TP backend {self.name!r} does not take option(s) {', '.join(map(repr, unknown))}; its options: {listed}"
            )
        return {name: opt.convert(self.name, given[name]) if name in given else opt.default for name, opt in known.items()}

    def function_family_of(self, options: Mapping[str, Any]) -> str:
        """The function family of a model built with these (resolved) options; default
        :attr:`function_family`. A backend whose options choose another function class
        (``grid``/``gaunt`` with ``sites=conv, conv_weights=path`` compute MACE's own ``cg``
        function) overrides it, and :func:`~mace_gaunt_plugin.switch_backend` uses it."""
        return self.function_family

    def conv_irreps_out(
        self, irreps_node: o3.Irreps, irreps_edge: o3.Irreps, irreps_target: o3.Irreps, options: Mapping[str, Any]
    ) -> Optional[o3.Irreps]:
        """Output irreps of the conv site, or ``None`` to keep MACE's
        ``tp_out_irreps_with_instructions`` layout."""
        return None

    def build_conv(
        self,
        irreps_node: o3.Irreps,
        irreps_edge: o3.Irreps,
        irreps_out: o3.Irreps,
        instructions: Optional[list],
        options: Mapping[str, Any],
    ) -> Optional[torch.nn.Module]:
        """The conv-site module, or ``None`` for MACE's stock e3nn tensor product."""
        return None

    def build_product(
        self,
        irreps_in: o3.Irreps,
        irreps_out: o3.Irreps,
        correlation: int,
        num_elements: int,
        options: Mapping[str, Any],
    ) -> Optional[torch.nn.Module]:
        """The product-site module, or ``None`` for MACE's stock symmetric contraction."""
        return None

    def check_model_config(self, options: Mapping[str, Any], config: Mapping[str, Any]) -> None:
        """Refuse, before anything is built or written, a MACE model config this backend
        cannot represent (``config`` holds MACE constructor arguments). Default: accept."""

    def check_device(self, options: Mapping[str, Any], device: str) -> None:
        """Refuse, before training loads any data, options that cannot run on ``device``
        (``"cpu"``, ``"cuda"``, ... as given to ``mace_run_train --device``). Default: accept."""

    # Training hooks, called by the mace_run_train integration (mace_gaunt_plugin.mace).
    # Backends whose modules change during training (``sparse``) override them.

    def on_epoch_start(self, model: torch.nn.Module, epoch: int, steps_per_epoch: int) -> None:
        """Called before every training epoch (0-based ``epoch``, also after a restart)."""

    def before_save(self, model: torch.nn.Module) -> torch.nn.Module:
        """Called on the model that ``mace_run_train`` is about to save as ``NAME.model``
        (and compile); returns the model to save. Default: unchanged."""
        return model


def require_natural_parity(backend: str, irreps: o3.Irreps, what: str) -> None:
    """Gaunt products only exist between natural-parity irreps (0e, 1o, 2e, 3o, ...)."""
    bad = [str(ir) for _, ir in o3.Irreps(irreps) if ir.p != (-1) ** ir.l]
    if bad:
        raise UnsupportedIrrepsError(
            backend,
            str(irreps),
            f"{what} contain irreps without natural parity ({', '.join(sorted(set(bad)))}); a Gaunt product "
            "is a product of functions on the sphere, which only have parity (-1)^l",
            "Use natural-parity hidden irreps (e.g. '128x0e + 128x1o'), or the 'e3nn' or 'sparse' backend.",
        )


def require_uniform_multiplicity(backend: str, irreps: o3.Irreps, what: str) -> int:
    """The channel-wise backends need one multiplicity for every irrep; returns it."""
    muls = {mul for mul, _ in o3.Irreps(irreps)}
    if len(muls) != 1:
        raise UnsupportedIrrepsError(
            backend,
            str(irreps),
            f"{what} must have one multiplicity for every degree (got {sorted(muls)})",
            "Use hidden irreps such as '64x0e + 64x1o' (MACE's --num_channels/--max_L form).",
        )
    return muls.pop()
