"""What a safe model file's header may ask the loader to build, checked before anything is built.

The checksum of a safe model file has no key: whoever edits a file can recompute it. So
:func:`~mace_gaunt_plugin.load_model` must not trust the header's config to describe a
model of reasonable size. Building first and comparing shapes afterwards is too late: a
141 kB file whose config says ``num_bessel=10000000`` or ``radial_MLP=[100000, 100000]``
would allocate gigabytes before the comparison. :func:`check_config` runs on the header's
JSON config and the file's tensors, before any module exists:

1. **Caps** on what tensors cannot check: every integer in the config (``<= MAX_INT``),
   ``correlation`` (``<= MAX_CORRELATION``), ``max_ell`` and the irreps' degrees
   (``<= MAX_L``), irreps strings and lists (length), ``num_interactions``
   (``<= MAX_INTERACTIONS``), element numbers (1..118). At these caps a model builds in
   seconds; the stock MACE product stops at degree 3 on its own.
2. **Shapes** the config implies for parameters that every backend shares (MACE builds
   them itself), compared with the file's tensors: the number of interaction blocks, the
   Bessel weights, the node embedding (elements x scalar channels), each interaction's
   ``linear_up`` (sum over irreps of channels squared), the radial MLP's hidden widths and
   the last readout's MLP. Parameters whose size grows with the config are then paid for
   by the file's own bytes.

:func:`~mace_gaunt_plugin.save_model` applies the caps too, so that the plugin never
writes a file it would refuse to read.
"""

from __future__ import annotations

import re
from typing import Any, Iterator, Mapping, Optional

import torch

__all__ = ["MAX_CORRELATION", "MAX_L", "MAX_INTERACTIONS", "MAX_INT", "MAX_DEPTH", "check_caps", "check_config", "depth_of"]

#: Largest body order of the product basis a safe model file may ask for.
MAX_CORRELATION = 4
#: Largest spherical-harmonic degree (``max_ell``) and irreps degree.
MAX_L = 6
#: Most interaction blocks.
MAX_INTERACTIONS = 16
#: Largest integer anywhere in the config (sizes, counts, widths).
MAX_INT = 1 << 20
#: Longest irreps string and list in the config.
MAX_IRREPS_CHARS = 512
MAX_LIST = 4096
#: Deepest nesting of the JSON header (the real one is 4 deep).
MAX_DEPTH = 32

_IRREPS_KEYS = ("hidden_irreps", "edge_irreps", "MLP_irreps")


def depth_of(value: Any) -> int:
    """Nesting depth of a JSON value (iterative: a deep value cannot exhaust the stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            return deepest
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def _ints(value: Any, where: str) -> Iterator[tuple[str, int]]:
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        yield where, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _ints(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _ints(v, where)


def _whole(config: Mapping[str, Any], key: str, low: int, high: int, required: bool = True) -> Optional[int]:
    value = config.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"config entry {key!r} must be a whole number, not {value!r}")
    if not low <= value <= high:
        raise ValueError(f"config entry {key!r} is {value}; a safe model file may hold {low} to {high}")
    return value


def _irreps(config: Mapping[str, Any], key: str) -> Any:
    from e3nn import o3

    text = config.get(key)
    if text is None:
        return None
    if not isinstance(text, str) or len(text) > MAX_IRREPS_CHARS:
        raise ValueError(f"config entry {key!r} must be an irreps string of at most {MAX_IRREPS_CHARS} characters")
    try:
        irreps = o3.Irreps(text)
    except (ValueError, TypeError, AssertionError) as exc:
        raise ValueError(f"config entry {key!r}: {text!r} is not an irreps string ({exc})") from None
    if len(irreps) and irreps.lmax > MAX_L:
        raise ValueError(f"config entry {key!r} has degree {irreps.lmax}; a safe model file may hold degrees up to {MAX_L}")
    return irreps


def check_caps(config: Mapping[str, Any]) -> None:
    """Refuse (``ValueError``) a JSON config beyond the caps of this module."""
    if depth_of(config) > MAX_DEPTH - 1:
        raise ValueError(f"the config is nested more than {MAX_DEPTH - 1} levels deep")
    for where, value in _ints(config, "config"):
        if abs(value) > MAX_INT:
            raise ValueError(f"{where} is {value}; a safe model file holds sizes up to {MAX_INT}")
    for key, value in config.items():
        if isinstance(value, (list, tuple, str)) and len(value) > MAX_LIST:
            raise ValueError(f"config entry {key!r} has {len(value)} entries; a safe model file may hold up to {MAX_LIST}")
    _whole(config, "max_ell", 0, MAX_L)
    _whole(config, "num_interactions", 1, MAX_INTERACTIONS)
    _whole(config, "num_bessel", 1, MAX_INT)
    correlation = config.get("correlation")
    for c in correlation if isinstance(correlation, list) else [correlation]:
        if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= MAX_CORRELATION:
            raise ValueError(
                f"config entry 'correlation' is {correlation!r}; a safe model file may hold whole numbers 1 to {MAX_CORRELATION}"
            )
    for key in _IRREPS_KEYS:
        _irreps(config, key)
    radial = config.get("radial_MLP")
    if radial is not None and (not isinstance(radial, list) or not 1 <= len(radial) <= 16
                               or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in radial)):  # fmt: skip
        raise ValueError(f"config entry 'radial_MLP' must be a list of 1 to 16 positive whole numbers, not {radial!r}")
    numbers = config.get("atomic_numbers")
    if not isinstance(numbers, list) or not 1 <= len(numbers) <= 118 or any(
        isinstance(z, bool) or not isinstance(z, int) or not 1 <= z <= 118 for z in numbers
    ):
        raise ValueError("config entry 'atomic_numbers' must list 1 to 118 element numbers (1..118)")
    heads = config.get("heads")
    if heads is not None and (not isinstance(heads, list) or not 1 <= len(heads) <= 64):
        raise ValueError("config entry 'heads' must list 1 to 64 head names")


def _mul_squared(irreps: Any) -> int:
    """Weights of an e3nn ``Linear`` from ``irreps`` to itself: sum over irreps of channels squared."""
    total: dict[Any, int] = {}
    for mul, ir in irreps:
        total[ir] = total.get(ir, 0) + mul
    return sum(m * m for m in total.values())


def check_config(config: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> None:
    """Refuse (``ValueError``) a JSON config beyond the caps, or one whose implied sizes of
    the shared MACE parameters differ from the file's tensors (see the module docstring)."""
    from e3nn import o3

    check_caps(config)
    n = int(config["num_interactions"])
    found = {int(m.group(1)) for k in tensors if (m := re.match(r"interactions\.(\d+)\.", k))}
    if found != set(range(n)):
        raise ValueError(f"the config says num_interactions={n}, the file holds tensors of {len(found)} interaction blocks")
    numbers = list(config["atomic_numbers"])
    expected: dict[str, int] = {"atomic_numbers": len(numbers)}
    if config.get("radial_type", "bessel") == "bessel":
        expected["radial_embedding.bessel_fn.bessel_weights"] = int(config["num_bessel"])
    hidden = _irreps(config, "hidden_irreps")
    if hidden is not None:
        scalars = hidden.count(o3.Irrep(0, 1))
        expected["node_embedding.linear.weight"] = len(numbers) * scalars
        for i in range(n):
            first = o3.Irreps([(scalars, (0, 1))])
            expected[f"interactions.{i}.linear_up.weight"] = _mul_squared(first if i == 0 else hidden)
        mlp = _irreps(config, "MLP_irreps")
        nonlinear = config.get("readout_cls", "NonLinearReadoutBlock") == "NonLinearReadoutBlock"
        if mlp is not None and len(hidden) and nonlinear and not config.get("use_last_readout_only"):
            heads = len(config.get("heads") or ["Default"])
            expected[f"readouts.{n - 1}.linear_1.weight"] = hidden[0].mul * heads * mlp.count(hidden[0].ir)
    for i, width in enumerate(config.get("radial_MLP") or []):
        for block in range(n):
            key = f"interactions.{block}.conv_tp_weights.layer{i}.weight"
            if key not in tensors:
                raise ValueError(f"the config says radial_MLP {config['radial_MLP']}, the file has no {key}")
            if tensors[key].dim() != 2 or tensors[key].shape[1] != width:
                raise ValueError(f"the config says radial_MLP {config['radial_MLP']}, the file's {key} has shape {list(tensors[key].shape)}")
    for key, numel in expected.items():
        if key not in tensors:
            raise ValueError(f"the file has no {key}, which every model of this config has")
        if tensors[key].numel() != numel:
            raise ValueError(f"the config implies {numel} values for {key}, the file holds {tensors[key].numel()}")
