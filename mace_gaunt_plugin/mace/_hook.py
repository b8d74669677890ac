"""``use_backend``: build MACE models whose tensor products come from a plugin backend.

mace 0.3.16 has no plugin hook. Every interaction block's ``_setup`` builds its conv with
the names ``TensorProduct`` and ``tp_out_irreps_with_instructions`` that
``mace.modules.blocks`` imported, and ``EquivariantProductBasisBlock`` builds its product
with ``SymmetricContractionWrapper`` from the same namespace. Inside ``use_backend`` those
three names point to factories that ask the backend first and fall back to MACE's own
code only for sites the backend leaves alone; a module the backend returns must be a
:class:`~mace_gaunt_plugin.backends.base.BackendModule` naming the backend and the site,
or construction stops with a message saying so. A fourth, small step marks interaction
blocks whose plugin conv does its own gather and scatter (``conv_fusion``, MACE's own
flag for fused convolutions). Everything is put back on exit, exceptions included. The
substitutions go through :mod:`~mace_gaunt_plugin.mace._seam` (seam 2), which checks that
MACE still looks these names up.

Contexts nest: the innermost backend wins, and leaving it puts the outer one's names
back. Every factory falls back to MACE's *own* code (remembered on the factory as
``_mgp_stock``), never to an enclosing backend's factory, so an inner ``e3nn`` builds
stock MACE and an inner ``sparse`` gets MACE's instructions.

Only construction is affected: no ``forward`` is replaced, and models built inside carry
plain modules that pickle, load and script like any MACE model.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Iterator

from ..backends.base import BackendModule, TPBackend
from ..errors import BackendError, BackendMismatchError
from ..registry import get_backend

__all__ = ["use_backend"]


def _claimed(backend: TPBackend, site: str, module: Any) -> Any:
    """``module`` if it is a site module of ``backend`` (a :class:`BackendModule` that names
    the backend and the site); raises otherwise, so a backend cannot put something into a
    model that :func:`~mace_gaunt_plugin.backend_of` would not recognise."""
    if not isinstance(module, BackendModule):
        raise BackendError(
            f"TP backend {backend.name!r} built a {type(module).__module__}.{type(module).__qualname__} for the "
            f"{site!r} site, which is not a mace_gaunt_plugin.backends.base.BackendModule; site modules must "
            f"subclass BackendModule and call BackendModule.__init__(self, {backend.name!r}, {site!r}, options) "
            "(or return None to leave the site to MACE)"
        )
    if (str(module.backend_name), str(module.site)) != (backend.name, site):
        raise BackendError(
            f"TP backend {backend.name!r} built a {type(module).__name__} for the {site!r} site that calls itself "
            f"backend {module.backend_name!r}, site {module.site!r}; pass ({backend.name!r}, {site!r}) to "
            "BackendModule.__init__"
        )
    return module


def _accelerated(config: Any) -> bool:
    return config is not None and bool(getattr(config, "enabled", False))


def _refuse_accelerators(backend: TPBackend, cueq_config: Any, oeq_config: Any) -> None:
    if backend.name != "e3nn" and (_accelerated(cueq_config) or _accelerated(oeq_config)):
        raise BackendMismatchError(
            f"TP backend {backend.name!r} cannot be combined with cuEquivariance/OpenEquivariance "
            "acceleration (--enable_cueq / --enable_oeq): those replace the same tensor products. "
            "Use one or the other; cuEquivariance applies to the 'e3nn' backend only."
        )


_BLOCKS = "mace.modules.blocks"
_NAMES = ("TensorProduct", "tp_out_irreps_with_instructions", "SymmetricContractionWrapper")
_INIT = f"{_BLOCKS}.InteractionBlock.__init__"


def _stock(current: Any) -> Any:
    """MACE's own object behind ``current`` (itself, or what a ``use_backend`` factory wraps)."""
    return getattr(current, "_mgp_stock", current)


@contextlib.contextmanager
def use_backend(name: str, **options: Any) -> Iterator[TPBackend]:
    """Build every MACE model (or interaction / product block) inside with backend ``name``.

    Parameters
    ----------
    name : str
        A registered backend (see :func:`mace_gaunt_plugin.available_backends`).
    **options
        Backend options; unknown ones raise
        :class:`~mace_gaunt_plugin.errors.BackendOptionError` before anything is patched.

    Examples
    --------
    >>> from mace_gaunt_plugin import use_backend
    >>> with use_backend("e3nn"):
    ...     pass  # e.g. mace.modules.ScaleShiftMACE(**config)

    Contexts nest (the innermost wins; leaving it restores the outer one). Not
    thread-safe: it swaps names in ``mace.modules.blocks`` for the duration.
    """
    backend = get_backend(name)
    opts = backend.resolve_options(options)

    from e3nn import o3

    from . import _seam

    _seam.require_compatible()
    # What is there now (stock, or an enclosing use_backend's factories) is put back on
    # exit; what the factories fall back to is always MACE's own code.
    outer = {attr: _seam.current(f"{_BLOCKS}.{attr}") for attr in _NAMES}
    outer_init = _seam.current(_INIT)
    stock_tp, stock_tp_out, stock_sc = (_stock(outer[attr]) for attr in _NAMES)
    stock_init = _stock(outer_init)

    def tensor_product(
        irreps_in1: Any,
        irreps_in2: Any,
        irreps_out: Any,
        instructions: Any = None,
        shared_weights: bool = False,
        internal_weights: bool = False,
        use_conv_fusion: bool = True,
        cueq_config: Any = None,
        oeq_config: Any = None,
    ) -> Any:
        _refuse_accelerators(backend, cueq_config, oeq_config)
        module = backend.build_conv(o3.Irreps(irreps_in1), o3.Irreps(irreps_in2), o3.Irreps(irreps_out), instructions, opts)
        if module is not None:
            return _claimed(backend, "conv", module)
        return stock_tp(
            irreps_in1,
            irreps_in2,
            irreps_out,
            instructions=instructions,
            shared_weights=shared_weights,
            internal_weights=internal_weights,
            use_conv_fusion=use_conv_fusion,
            cueq_config=cueq_config,
            oeq_config=oeq_config,
        )

    def tp_out_irreps_with_instructions(irreps1: Any, irreps2: Any, target_irreps: Any) -> Any:
        out = backend.conv_irreps_out(o3.Irreps(irreps1), o3.Irreps(irreps2), o3.Irreps(target_irreps), opts)
        if out is None:
            return stock_tp_out(irreps1, irreps2, target_irreps)
        return out, None

    def symmetric_contraction(
        irreps_in: Any,
        irreps_out: Any,
        correlation: int,
        num_elements: Any = None,
        cueq_config: Any = None,
        oeq_config: Any = None,
        use_reduced_cg: bool = True,
    ) -> Any:
        _refuse_accelerators(backend, cueq_config, oeq_config)
        module = backend.build_product(o3.Irreps(irreps_in), o3.Irreps(irreps_out), correlation, num_elements, opts)
        if module is not None:
            return _claimed(backend, "product", module)
        return stock_sc(
            irreps_in=irreps_in,
            irreps_out=irreps_out,
            correlation=correlation,
            num_elements=num_elements,
            cueq_config=cueq_config,
            oeq_config=oeq_config,
            use_reduced_cg=use_reduced_cg,
        )

    @functools.wraps(stock_init)
    def interaction_init(self: Any, *args: Any, **kwargs: Any) -> None:
        stock_init(self, *args, **kwargs)
        conv = getattr(self, "conv_tp", None)
        if isinstance(conv, BackendModule) and bool(getattr(conv, "fused", False)):
            self.conv_fusion = True  # MACE's flag: the conv gathers and scatters itself

    ours = dict(zip(_NAMES, (tensor_product, tp_out_irreps_with_instructions, symmetric_contraction)))
    for attr, stock in zip(_NAMES, (stock_tp, stock_tp_out, stock_sc)):
        ours[attr]._mgp_stock = stock  # type: ignore[attr-defined]
    interaction_init._mgp_stock = stock_init  # type: ignore[attr-defined]
    with contextlib.ExitStack() as stack:
        for attr, factory in ours.items():
            stack.enter_context(_seam.substituted(f"{_BLOCKS}.{attr}", factory))
        stack.enter_context(_seam.substituted(_INIT, interaction_init))
        yield backend
