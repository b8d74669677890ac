"""The ``aotinductor`` engine: the model core compiled ahead of time with ``torch.export``
and AOTInductor into a ``.pt2`` package of native code, for LAMMPS to load without
TorchScript (deprecated in the torch we run) and without Python-level dispatch per op.

Compiling needs the core as plain PyTorch ops with symbolic sizes (edges and nodes vary
every step), which e3nn's TorchScript pieces prevent: its generated modules are
``torch.jit.script``-ed when built and stored as TorchScript in a pickle, and its
spherical harmonics are a ``@torch.jit.script`` function, and both fix the sizes they are
traced with. So the compile runs in a child process with ``PYTORCH_JIT=0`` and e3nn's
``jit_script_fx`` off, which rebuilds the model from a safe model file (data, no
TorchScript) as plain modules; the model is traced with ``make_fx`` (which also records
the force pass of ``torch.autograd.grad`` as ordinary ops), exported with dynamic edge
and node counts and compiled. The child checks the package against the eager core on a
graph of another size before it writes it.

The package holds native code for one torch version and one device type: loading refuses
any other (re-export). The grid and gaunt convs stay this plugin's custom operators
(``mace_gaunt::quad_*``, edge-chunked, with their own derivatives), which the package
calls by name through torch's dispatcher; everything else is compiled. The per-layer prefix
sizes of the graph (:class:`~lammps_interface._core.MACEEdgeCore`) are inputs too, as the
lengths of marker tensors (dynamic sizes), so one package serves both LAMMPS routes:
every prefix the whole graph (one rank), or pruned by hop depth (several ranks).
"""

from __future__ import annotations

import argparse
import copy
import io
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional, Sequence

import torch

from ._errors import LAMMPSInterfaceError, ModelFileError

__all__ = ["compile_core", "AOTCore", "ENGINE"]

ENGINE = "aotinductor"

#: worst relative difference the child accepts between package and eager core (float64;
#: float32 models get the float32 bound)
_CHECK_TOLERANCE = {"float64": 1e-10, "float32": 1e-4}


def compile_core(model: torch.nn.Module, head: int, device: str, timeout_s: float = 3600.0) -> tuple[bytes, list[float]]:
    """The ``.pt2`` package (bytes) of the edge core of ``model`` (eager MACE model, any TP
    backend, in the dtype to run) for ``device`` (``cpu`` or ``cuda``), compiled in a
    child process (see the module docstring; a minute or two for a small model), and the
    energy of an atom without neighbours per species (see :class:`AOTCore`)."""
    from mace_gaunt_plugin.mace._safe_file import SafeModelFileError, save_model

    from ._core import MACEEdgeCore, full_graph_sizes

    if device == "cuda" and not torch.cuda.is_available():
        raise LAMMPSInterfaceError(
            "--engine aotinductor compiles for the device the model runs on: --device cuda needs a CUDA GPU "
            "on the machine that exports (export there, with the torch LAMMPS will use)"
        )
    with tempfile.TemporaryDirectory(prefix="mgp_aot_") as tmp:
        safe = os.path.join(tmp, "model.safetensors")
        package = os.path.join(tmp, "core.pt2")
        try:
            save_model(model, safe)
        except SafeModelFileError as exc:
            raise LAMMPSInterfaceError(f"--engine aotinductor rebuilds the model from its data, which failed: {exc}") from None
        # the child imports this very lammps_interface and mace_gaunt_plugin (a source checkout too)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
        env = dict(os.environ, PYTORCH_JIT="0", PYTHONPATH=path)
        cmd = [sys.executable, "-m", "lammps_interface._aot", safe, package, "--head", str(head), "--device", device]
        try:
            res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise LAMMPSInterfaceError(f"the AOTInductor compile took longer than {timeout_s:g} s") from None
        if res.returncode != 0 or not os.path.isfile(package):
            tail = "\n".join((res.stderr or res.stdout).strip().splitlines()[-15:])
            raise LAMMPSInterfaceError(f"the AOTInductor compile of the model core failed (rc {res.returncode}):\n{tail}")
        with open(package, "rb") as f:
            blob = f.read()
    core = MACEEdgeCore(copy.deepcopy(model), head=head)
    no_edges = (torch.zeros(0, 3, dtype=torch.float64), torch.zeros(2, 0, dtype=torch.long))
    n = core.num_species
    isolated = core(*no_edges, torch.arange(n), *full_graph_sizes(core.num_interactions, n, 0))[0]
    return blob, [float(e) for e in isolated]


class AOTCore:
    """A compiled package as the wrapper calls a core: ``core(vectors, edge_index,
    species, nodes, edges)`` -> ``(node_energy, edge_forces)``. The package is loaded on
    :meth:`to` (the device is known only in LAMMPS: one GPU per rank).

    A graph without edges (a rank whose atoms have no neighbours) is answered from
    ``isolated_energies`` (each species' energy without neighbours, computed by the eager
    core at export): with no edges a node's energy depends on its species alone, and the
    compiled FFTs of the gaunt backend fail on empty batches (torch 2.13's MKL call)."""

    def __init__(
        self, blob: bytes, built_with_torch: str, device_type: str, isolated_energies: Sequence[float], dtype: str
    ) -> None:
        if built_with_torch != torch.__version__:
            raise ModelFileError(
                f"this model file's aotinductor core was compiled with torch {built_with_torch}, this process runs "
                f"torch {torch.__version__}: native code is bound to its torch version; re-export the model here "
                "(mace_gaunt_create_lammps_model --engine aotinductor) or pick another engine"
            )
        self._blob = blob
        self.device_type = device_type
        self._isolated = torch.tensor(list(isolated_energies), dtype=torch.float64)
        self._force_dtype = getattr(torch, dtype)
        self._runner: Any = None
        self._device: Optional[torch.device] = None

    def to(self, device: torch.device) -> "AOTCore":
        device = torch.device(device)
        if device.type != self.device_type:
            raise LAMMPSInterfaceError(
                f"this aotinductor core was compiled for {self.device_type}, not {device.type}: re-export with "
                f"--device {device.type}"
            )
        if self._runner is not None and device == self._device:
            return self
        index = -1 if device.index is None else device.index
        _register_plugin_operators()
        try:
            self._runner = torch._inductor.aoti_load_package(io.BytesIO(self._blob), device_index=index)
        except Exception as exc:  # noqa: BLE001  (the loader's own error says why)
            raise ModelFileError(f"model file holds an unloadable aotinductor core ({exc}); re-export it") from exc
        self._device = device
        self._isolated = self._isolated.to(device)
        return self

    def eval(self) -> "AOTCore":
        return self

    def __call__(
        self, vectors: torch.Tensor, edge_index: torch.Tensor, species: torch.Tensor, nodes: list[int], edges: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        from ._core import size_marks

        if self._runner is None:
            self.to(torch.device(self.device_type))
        if vectors.shape[0] == 0:
            return self._isolated[species[: nodes[0]]], torch.zeros((0, 3), dtype=self._force_dtype, device=vectors.device)
        device = vectors.device
        node_energy, edge_forces = self._runner(vectors, edge_index, species, size_marks(nodes, device), size_marks(edges, device))
        return node_energy, edge_forces


def _register_plugin_operators() -> None:
    """The grid/gaunt convs are this plugin's custom operators (``mace_gaunt::quad_*`` and,
    for ``kernel=triton``, ``quad_*_triton``; Python implementations, Triton imported only
    when a kernel runs), which a package calls by name: register them before it runs."""
    import mace_gaunt_plugin.backends._conv_primitives  # noqa: F401
    import mace_gaunt_plugin.backends._conv_triton  # noqa: F401


# ------------------------------------------------------------------ the child process
def _sample_graph(n_nodes: int, n_edges: int, num_species: int, r_max: float, device: str, seed: int):
    """A graph of ``n_nodes`` atoms in a cluster of about ``r_max`` (random points spread
    along the diagonal, so that none coincide) and ``n_edges`` distinct directed edges
    among them (sizes above 1, so that none is specialised), sorted by receiver; float64
    edge vectors, as the wrapper passes them whatever the model's dtype."""
    g = torch.Generator().manual_seed(seed)
    diagonal = torch.arange(n_nodes, dtype=torch.float64)[:, None] * (0.05 * r_max)
    pos = torch.rand(n_nodes, 3, generator=g, dtype=torch.float64) * (0.3 * r_max) + diagonal
    pairs = torch.tensor([(s, r) for s in range(n_nodes) for r in range(n_nodes) if s != r])
    pick = pairs[torch.randperm(len(pairs), generator=g)[:n_edges]]
    pick = pick[torch.argsort(pick[:, 1], stable=True)].T.contiguous()
    vectors = (pos[pick[1]] - pos[pick[0]]).to(device)
    species = (torch.arange(n_nodes) % num_species).to(device)
    return vectors, pick.to(device), species


def _sample_layers(graph: tuple, n_layers: int) -> tuple[tuple, tuple[list[int], list[int]]]:
    """A graph from :func:`_sample_graph` read as sorted by hop depth (node prefixes
    spread evenly), without the edges a depth-sorted graph cannot hold (a sender more than
    one hop deeper than its receiver), and its prefix sizes."""
    vectors, edge_index, species = graph
    n_nodes = species.shape[0]
    nodes = [max(1, (n_nodes * (d + 1)) // (n_layers + 1)) for d in range(n_layers)]
    bounds = torch.tensor(nodes + [n_nodes], device=edge_index.device)
    depth = torch.searchsorted(bounds, edge_index, right=True)  # depth of each sender and receiver
    keep = (depth[0] <= depth[1] + 1) & (depth[1] < n_layers)
    edge_index = edge_index[:, keep]
    edges = [int((edge_index[1] < nodes[d]).sum()) for d in range(n_layers - 1)]
    return (vectors[keep], edge_index, species), (nodes, edges)


def _compile_here(safe_path: str, package_path: str, head: int, device: str) -> None:
    """Rebuild, trace, export, compile, check and write the package (child process)."""
    import e3nn

    if torch.jit._state._enabled.enabled:  # type: ignore[attr-defined]
        raise SystemExit("run with PYTORCH_JIT=0 (compile_core does)")
    e3nn.set_optimization_defaults(jit_script_fx=False)
    from torch.export import Dim, export
    from torch.fx.experimental.proxy_tensor import make_fx

    from mace_gaunt_plugin.mace._safe_file import load_model

    from ._core import MACEEdgeCore, MACEEdgeCoreExport, full_graph_sizes, size_marks

    model = load_model(safe_path, device=device)
    core = MACEEdgeCoreExport(model, head=head).eval()
    dtype = core.r_max.dtype
    species_n, r_max, n = core.num_species, float(core.r_max), core.num_interactions
    dev = torch.device(device)

    def inputs(graph: tuple, sizes: tuple[list[int], list[int]]) -> tuple:
        return (*graph, size_marks(sizes[0], dev), size_marks(sizes[1], dev))

    # every size distinct and above 1 in the trace, so that none is specialised or tied to another
    trace = inputs(*_sample_layers(_sample_graph(4 * n + 7, 16 * n + 37, species_n, r_max, device, seed=0), n))
    all_sizes = [t.shape[0] for t in trace[:3]] + [m.shape[0] for m in trace[3] + trace[4]]
    if len(set(all_sizes)) != len(all_sizes) or min(all_sizes) < 2 or 3 in all_sizes:
        raise SystemExit(f"internal: the trace graph's sizes {all_sizes} are not distinct")
    check_graph = _sample_graph(8, 37, species_n, r_max, device, seed=1)
    checks = [_sample_layers(check_graph, n), (check_graph, full_graph_sizes(n, 8, 37))]
    eager = MACEEdgeCore(load_model(safe_path, device=device), head=head).eval()
    references = [[t.clone() for t in eager(*g, *sz)] for g, sz in checks]  # before tracing (it leaves e3nn state fake)

    t0 = time.perf_counter()
    traced = make_fx(core, tracing_mode="symbolic", _allow_non_fake_inputs=True)(*trace)
    edges, nodes = Dim("edges", min=0), Dim("nodes", min=1)
    node_dims = [{0: Dim(f"nodes_{d}", min=1)} for d in range(n)]
    edge_dims = [{0: Dim(f"edges_{d}", min=0)} for d in range(n - 1)]
    program = export(
        traced, trace, dynamic_shapes=({0: edges}, {1: edges}, {0: nodes}, node_dims, edge_dims), strict=False
    )
    t1 = time.perf_counter()
    torch._inductor.aoti_compile_and_package(program, package_path=package_path)
    print(f"traced and exported in {t1 - t0:.1f} s, compiled in {time.perf_counter() - t1:.1f} s", file=sys.stderr)

    runner = torch._inductor.aoti_load_package(package_path)
    bound = _CHECK_TOLERANCE[str(dtype).replace("torch.", "")]
    for (graph, sizes), reference in zip(checks, references):
        got = runner(*inputs(graph, sizes))
        for name, a, b in zip(("node energies", "edge forces"), got, reference):
            scale = float(b.abs().max()) or 1.0
            if a.shape != b.shape or float((a - b).abs().max()) > bound * scale:
                os.remove(package_path)
                raise SystemExit(f"the compiled core's {name} differ from the eager core's on a check graph: not written")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Child-process entry point of :func:`compile_core`."""
    p = argparse.ArgumentParser(prog="python -m lammps_interface._aot")
    p.add_argument("safe_model")
    p.add_argument("package")
    p.add_argument("--head", type=int, default=0)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = p.parse_args(argv)
    _compile_here(args.safe_model, args.package, args.head, args.device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
