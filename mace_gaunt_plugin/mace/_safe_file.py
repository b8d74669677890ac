"""Model files that are data, not code: :func:`save_model`, :func:`load_model`,
:func:`safe_calculator` and the converter ``mace_gaunt_convert_model``.

A MACE ``.model`` file is a pickle: loading it runs whatever code it names. A *safe
model file* holds only data, in the safetensors format (an 8-byte length, a JSON header,
raw tensor bytes; no code can be stored in it, and reading it never unpickles, whatever
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` says). We use safetensors rather than
``torch.load(weights_only=True)`` because the guarantee then does not depend on torch's
unpickler allow-list or on a flag every caller must remember.

The safetensors metadata entry ``mace_gaunt_plugin`` holds our JSON header:

``format`` / ``format_version``
    :data:`FORMAT` and :data:`FORMAT_VERSION`; another version is refused.
``model_class``
    The MACE class, one of :data:`MODEL_CLASSES`.
``config``
    Its constructor arguments (:func:`mace_gaunt_plugin.mace._config.extract_config`) as
    JSON: irreps as strings, classes and the gate by name from MACE's own tables
    (``interaction_classes``, ``readout_classes``, ``gate_dict``), arrays as lists.
``backend`` / ``backend_options``
    The TP backend and its options; ``kept_paths`` for a ``sparse`` model (per layer,
    the CG paths it computes; a compact model's shapes follow from them).
``dtype``, ``plugin_version``, ``mace_version``, ``sha256``
    The checksum covers the header (without it) and every tensor's bytes, so a file
    changed after it was written is reported as such.

Loading rebuilds the model with :func:`mace_gaunt_plugin.build_model` and then loads the
tensors with strict key and shape checks.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from typing import Any, Mapping, Optional, Sequence, Union

import torch

from .._atomic_write import write_atomically
from ..errors import BackendError
from ._build import backend_of
from ._safe_limits import check_caps, check_config

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MODEL_CLASSES",
    "SAFE_SUFFIX",
    "SafeModelFileError",
    "save_model",
    "load_model",
    "read_header",
    "is_safe_model_file",
    "safe_calculator",
    "convert_model",
    "convert_main",
]

#: Name of the format in the header, and the metadata key that holds the header.
FORMAT = "mace-gaunt-plugin-model"
HEADER_KEY = "mace_gaunt_plugin"
#: File-name suffix of safe model files (the exporter picks its reader by it).
SAFE_SUFFIX = ".safetensors"
#: Bumped when the header or the tensor layout changes incompatibly.
FORMAT_VERSION = 1
#: MACE model classes a safe file may name (their configs are read by MACE's own
#: ``extract_config_mace_model``).
MODEL_CLASSES = ("ScaleShiftMACE",)

_IRREPS_KEYS = ("hidden_irreps", "edge_irreps", "MLP_irreps")
_ARRAY_KEYS = ("atomic_energies", "atomic_inter_scale", "atomic_inter_shift")

PathLike = Union[str, "os.PathLike[str]"]


class SafeModelFileError(BackendError, ValueError):
    """A safe model file that is missing, truncated, changed, of another format version,
    or that names a class, function or shape this plugin does not rebuild."""


# --------------------------------------------------------------------------- names


def _class_tables() -> dict[str, dict[str, Any]]:
    """Config key -> {name: object} for every config entry that is a class or function."""
    from mace import modules

    return {
        "interaction_cls": dict(modules.interaction_classes),
        "interaction_cls_first": dict(modules.interaction_classes),
        "readout_cls": dict(modules.readout_classes),
        "gate": dict(modules.gate_dict),
    }


def _model_class(name: str) -> type:
    from mace import modules

    if name not in MODEL_CLASSES:
        raise SafeModelFileError(
            f"the file names the model class {name!r}; safe model files hold {', '.join(MODEL_CLASSES)} only"
        )
    return getattr(modules, name)


# --------------------------------------------------------------------------- config <-> JSON


def _is_json(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_json(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v) for k, v in value.items())
    return False


def _config_to_json(config: Mapping[str, Any]) -> dict[str, Any]:
    """MACE constructor arguments -> JSON values (refuses anything it cannot name)."""
    import numpy as np

    tables = _class_tables()
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key in tables:
            names = [name for name, obj in tables[key].items() if obj is value]
            if not names:
                raise SafeModelFileError(
                    f"config entry {key!r} is {value!r}, which is not in MACE's table of allowed values "
                    f"({', '.join(tables[key])}); a safe model file can only name those"
                )
            out[key] = names[0]
        elif key in _IRREPS_KEYS:
            out[key] = None if value is None else str(value)
        elif key in _ARRAY_KEYS or key == "atomic_numbers":
            array = value.detach().cpu().numpy() if torch.is_tensor(value) else np.asarray(value)
            out[key] = array.tolist()
        elif key == "cueq_config" and value is not None:
            raise SafeModelFileError("the model carries a cuEquivariance config; convert it back to e3nn before saving")
        elif torch.is_tensor(value) and value.numel() == 1:
            out[key] = value.item()
        elif _is_json(value):
            out[key] = list(value) if isinstance(value, tuple) else value
        else:
            raise SafeModelFileError(
                f"config entry {key!r} is a {type(value).__name__}, which a safe model file cannot hold as data"
            )
    return out


def _config_from_json(config: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`_config_to_json`: names resolved through MACE's tables only."""
    import numpy as np
    from e3nn import o3

    tables = _class_tables()
    out: dict[str, Any] = {}
    for key, value in config.items():
        if not _is_json(value):
            raise SafeModelFileError(f"config entry {key!r} is not plain JSON data")
        if key in tables:
            if not isinstance(value, str) or value not in tables[key]:
                raise SafeModelFileError(
                    f"config entry {key!r} names {value!r}, which is not one of {', '.join(tables[key])}"
                )
            out[key] = tables[key][value]
        elif key in _IRREPS_KEYS:
            try:
                out[key] = None if value is None else o3.Irreps(value)
            except (ValueError, TypeError) as exc:
                raise SafeModelFileError(f"config entry {key!r}: {value!r} is not an irreps string ({exc})") from None
        elif key in _ARRAY_KEYS:
            out[key] = np.asarray(value, dtype=np.float64)
        else:
            out[key] = value
    return out


# --------------------------------------------------------------------------- header


def _digest(header: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 of the header (without ``sha256``) and of every tensor (name, dtype, shape, bytes)."""
    h = hashlib.sha256(json.dumps({k: v for k, v in header.items() if k != "sha256"}, sort_keys=True).encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{list(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _float_dtype(model: torch.nn.Module) -> torch.dtype:
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.get_default_dtype()


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` that refuses a JSON object naming a key twice (two JSON
    parsers could then read one file as two different models)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the key {key!r} appears twice in one object")
        out[key] = value
    return out


def _parse_header(text: str, path: str) -> Any:
    """The JSON header, refused if invalid, nested deeper than the real one can be, or
    with a key given twice."""
    from ._safe_limits import MAX_DEPTH

    # depth first, without recursion: json.loads would raise RecursionError on deep nesting
    depth = level = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            level += 1
            depth = max(depth, level)
            if depth > MAX_DEPTH:
                break
        elif char in "]}":
            level -= 1
    if depth > MAX_DEPTH:
        raise SafeModelFileError(f"{path}: its header is nested more than {MAX_DEPTH} levels deep; the file was damaged or edited")
    try:
        header = json.loads(text, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise SafeModelFileError(f"{path}: its header is not valid JSON ({exc}); the file was damaged or edited") from None
    return header


def _check_header(header: Any, path: str) -> dict[str, Any]:
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise SafeModelFileError(f"{path}: not a mace-gaunt-plugin safe model file (no {FORMAT!r} header)")
    version = header.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:  # not True, not 1.0
        raise SafeModelFileError(
            f"{path}: safe model file format version {version!r}; this mace-gaunt-plugin reads version "
            f"{FORMAT_VERSION}. Use the plugin version that wrote it ({header.get('plugin_version', '?')}), or "
            "convert the original .model again with mace_gaunt_convert_model"
        )
    missing = [k for k in ("model_class", "config", "backend", "backend_options", "dtype", "sha256") if k not in header]
    if missing:
        raise SafeModelFileError(f"{path}: the header lacks {', '.join(missing)}")
    return header


# --------------------------------------------------------------------------- save / load


def save_model(model: torch.nn.Module, path: PathLike) -> str:
    """Write ``model`` (an eager MACE model, any TP backend) as a safe model file.

    Parameters
    ----------
    model : torch.nn.Module
        A ``ScaleShiftMACE`` (as saved by ``mace_run_train``), stock or with a plugin
        backend; a compact ``sparse`` model keeps its kept paths.
    path : str or os.PathLike
        Output file (conventionally ``*.safetensors``); written through a temporary file
        in the same folder, then renamed.

    Returns
    -------
    str
        The path written.

    Raises
    ------
    SafeModelFileError
        A TorchScript model, another model class, or a config entry that cannot be
        written as data.

    Examples
    --------
    >>> # mgp.save_model(model, "my.safetensors"); twin = mgp.load_model("my.safetensors")
    """
    from safetensors.torch import save as st_save

    import mace

    from .. import __version__
    from ..backends.sparse_backend import kept_paths
    from ._config import BACKEND_KEY, OPTIONS_KEY, extract_config

    if isinstance(model, torch.jit.ScriptModule):
        raise SafeModelFileError("save_model needs the eager model, not a TorchScript one (*_compiled.model)")
    cls_name = type(model).__name__
    if cls_name not in MODEL_CLASSES:
        raise SafeModelFileError(f"save_model: {cls_name} is not supported; safe model files hold {', '.join(MODEL_CLASSES)}")
    config = dict(extract_config(model))
    config.pop(BACKEND_KEY, None)
    options = config.pop(OPTIONS_KEY, {})
    backend = backend_of(model)
    # one private copy per tensor: safetensors refuses shared storage
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    config_json = _config_to_json(config)
    try:
        check_caps(config_json)  # never write a file that load_model would refuse
    except ValueError as exc:
        raise SafeModelFileError(f"save_model: {exc}") from None
    header: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_class": cls_name,
        "config": config_json,
        "backend": backend,
        "backend_options": dict(options),
        "dtype": str(_float_dtype(model)).replace("torch.", ""),
        "plugin_version": __version__,
        "mace_version": getattr(mace, "__version__", "unknown"),
    }
    if backend == "sparse":
        header["kept_paths"] = [[list(p) for p in layer] for layer in kept_paths(model)]
    header["sha256"] = _digest(header, tensors)
    blob = st_save(tensors, metadata={HEADER_KEY: json.dumps(header, sort_keys=True)})
    return write_atomically(os.fspath(path), lambda f: f.write(blob))


def is_safe_model_file(path: PathLike) -> bool:
    """Whether ``path`` looks like a safetensors file (8-byte header length, then ``{``),
    judged from its first bytes only; a pickle or a TorchScript zip never does."""
    try:
        with open(os.fspath(path), "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000


def read_header(path: PathLike) -> dict[str, Any]:
    """The JSON header of a safe model file (checked: format name and version).

    >>> # read_header("my.safetensors")["backend"] -> 'grid'
    """
    header, _ = _read(os.fspath(path), tensors=False)
    return header


def _read(path: str, tensors: bool = True) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    from safetensors import SafetensorError, safe_open

    if not os.path.isfile(path):
        raise SafeModelFileError(f"model file {path!r} does not exist")
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            data = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise SafeModelFileError(
            f"{path}: not a readable safetensors file ({exc}); it is truncated or damaged, or it is not a safe model "
            "file (a pickled .model? convert it with mace_gaunt_convert_model, if you trust it)"
        ) from None
    if HEADER_KEY not in metadata:
        raise SafeModelFileError(f"{path}: a safetensors file without a mace-gaunt-plugin header (not written by save_model)")
    return _check_header(_parse_header(metadata[HEADER_KEY], path), path), data


def load_model(path: PathLike, device: str = "cpu", dtype: Optional[Union[str, torch.dtype]] = None) -> torch.nn.Module:
    """Rebuild the model stored in a safe model file; never unpickles.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :func:`save_model` or ``mace_gaunt_convert_model``.
    device : str
        Where the model goes (``"cpu"``, ``"cuda"``, ...).
    dtype : str or torch.dtype, optional
        ``float64``/``float32``; default: the dtype it was saved in.

    Returns
    -------
    torch.nn.Module
        The model (eval mode), built with :func:`mace_gaunt_plugin.build_model` and the
        file's backend and options; a compact ``sparse`` model is compact again.

    Raises
    ------
    SafeModelFileError
        Missing, truncated or changed file; unknown format version, model class, class
        or gate name; tensors missing, extra or of other shapes than the header's model.
    """
    from ..backends import sparse_backend
    from ..testing import default_dtype
    from ._config import model_from_config

    path = os.fspath(path)
    header, tensors = _read(path)
    if _digest(header, tensors) != header["sha256"]:
        raise SafeModelFileError(
            f"{path}: checksum mismatch: the header or the tensors were changed after the file was written; "
            "get the file again from its source"
        )
    cls = _model_class(str(header["model_class"]))
    if not isinstance(header["config"], dict) or not isinstance(header["backend_options"], dict):
        raise SafeModelFileError(f"{path}: header entries 'config' and 'backend_options' must be JSON objects")
    try:
        check_config(header["config"], tensors)  # before anything is built: bounded time and memory
    except ValueError as exc:
        raise SafeModelFileError(f"{path}: {exc} (a damaged or edited file; get it again from its source)") from None
    config = _config_from_json(header["config"])
    if header["backend"] != "e3nn":
        config["tp_backend"] = str(header["backend"])
        config["tp_backend_options"] = dict(header["backend_options"])
    target = _dtype(dtype if dtype is not None else header["dtype"], path)
    with default_dtype(target):
        try:
            model = model_from_config(config, model_cls=cls)
        except BackendError:
            raise
        except Exception as exc:  # noqa: BLE001  (MACE's constructor: any error means a bad config)
            raise SafeModelFileError(f"{path}: its config does not build a {cls.__name__} ({type(exc).__name__}: {exc})") from None
    try:
        sparse_backend.load_state_dict(model, tensors, strict=True)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        more = f" ... ({len(lines) - 6} more)" if len(lines) > 6 else ""
        raise SafeModelFileError(
            f"{path}: the tensors do not fit the model the header describes (tampered or damaged file?): "
            + " ".join(lines[:6]) + more
        ) from None
    if "kept_paths" in header:
        kept = [[list(p) for p in layer] for layer in sparse_backend.kept_paths(model)]
        if kept != header["kept_paths"]:
            raise SafeModelFileError(f"{path}: the rebuilt sparse model keeps paths {kept}, the header says {header['kept_paths']}")
    return model.to(device=device, dtype=target).eval()


def _dtype(value: Union[str, torch.dtype], path: str) -> torch.dtype:
    if isinstance(value, torch.dtype):
        if value not in (torch.float64, torch.float32):
            raise SafeModelFileError(f"{path}: dtype {value} is not float64 or float32")
        return value
    found = {"float64": torch.float64, "float32": torch.float32}.get(str(value).replace("torch.", ""))
    if found is None:
        raise SafeModelFileError(f"{path}: dtype {value!r} is not float64 or float32")
    return found


def safe_calculator(path: PathLike, device: str = "cpu", default_dtype: str = "float64", **kwargs: Any) -> Any:
    """An ASE ``MACECalculator`` around the model of a safe model file (no unpickling).

    ``kwargs`` go to ``mace.calculators.MACECalculator`` (``head``, ...).

    >>> # atoms.calc = mgp.safe_calculator("my.safetensors", device="cpu", default_dtype="float64")
    """
    from mace.calculators import MACECalculator

    model = load_model(path, device=device, dtype=default_dtype)
    return MACECalculator(models=model, device=device, default_dtype=default_dtype, **kwargs)


# --------------------------------------------------------------------------- the converter


def default_converted_path(model_path: str) -> str:
    """``my.model`` -> ``my.safetensors``."""
    stem = model_path[: -len(".model")] if model_path.endswith(".model") else model_path
    return stem + SAFE_SUFFIX


def convert_model(model_path: PathLike, output: Optional[PathLike] = None) -> str:
    """Read a pickled ``.model`` file (UNPICKLES IT: it runs any code the file contains;
    convert only files you trust) and write it as a safe model file. Returns the output path.

    The output must be named ``*.safetensors`` and must not be the input; both are checked,
    and the output's folder too, before the input is read."""
    from ._model_file import ModelInputError, check_output, read_pickled_model

    model_path = os.fspath(model_path)
    out = os.fspath(output) if output is not None else default_converted_path(model_path)
    try:
        if not os.path.isfile(model_path):
            raise ModelInputError(f"model file {model_path!r} does not exist")
        check_output(model_path, out, suffixes=(SAFE_SUFFIX,), refused=(), what="a safe model file")
        model = read_pickled_model(model_path, "mace_gaunt_convert_model")  # the one pickle we open, on purpose
    except ModelInputError as exc:
        raise SafeModelFileError(str(exc)) from None
    return save_model(model, out)


def convert_main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point ``mace_gaunt_convert_model``."""
    parser = argparse.ArgumentParser(
        prog="mace_gaunt_convert_model",
        description=(
            "Convert a pickled MACE .model file into a safe model file (safetensors tensors + JSON header) that "
            "mgp.load_model, mgp.safe_calculator, mace_gaunt_create_lammps_model and LAMMPS decks read without "
            "running code. WARNING: the input is a PICKLE and is unpickled here, which runs any code it contains: "
            "convert only .model files you trust (your own, or from a source you trust). The output is safe to share."
        ),
    )
    parser.add_argument("model", help="pickled eager MACE model (NAME.model); it is unpickled: trusted files only")
    parser.add_argument("-o", "--output", help="output file (default: MODEL without .model + '.safetensors')")
    args = parser.parse_args(argv)
    try:
        out = convert_model(args.model, args.output)
    except BackendError as exc:
        print(f"mace_gaunt_convert_model: error: {exc}", file=sys.stderr)
        return 2
    header = read_header(out)
    print(f"wrote {out}: {header['model_class']}, TP backend {header['backend']!r}, {header['dtype']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(convert_main())
