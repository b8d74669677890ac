"""``mace_run_train --tp-backend NAME --tp-option KEY=VALUE``: MACE's own training command
with a plugin TP backend.

How it gets there
-----------------
The wheel's start-up hook (``_mace_gaunt_plugin_startup.py``, off with
``MACE_GAUNT_PLUGIN_DISABLE=1``) calls :func:`install` when ``mace.cli.run_train`` is
imported; :func:`install` makes :func:`main` that module's ``main``, which is what the
``mace_run_train`` console script calls. ``python -m mace_gaunt_plugin.train`` calls
:func:`main` directly and needs no hook.

What :func:`main` does
----------------------
1. Parses MACE's own arguments plus ``--tp-backend`` / ``--tp-option`` (``--help`` lists
   every registered backend and its options).
2. Checks, before anything is written (exit status 2 and a one-line reason otherwise):
   the backend exists, takes the options given, accepts the model configuration
   (``TPBackend.check_model_config``) and can run on ``--device``
   (``TPBackend.check_device``: e.g. ``kernel=triton`` needs Triton and CUDA); the
   ``--restart_latest`` checkpoint (only the one MACE will resume is opened, with
   ``weights_only=True``) holds the same backend and options (without ``--tp-backend`` a
   restart resumes with the checkpoint's backend); no cuEquivariance/OpenEquivariance conversion and no foundation-model
   fine-tuning with a plugin backend (both rebuild the model from its config, which
   would silently drop the backend); a ``--foundation_model`` file that is itself a
   plugin model is refused too.
3. Without ``--tp-backend``/``--tp-option`` (and no plugin checkpoint to resume), it
   calls MACE's stock ``run(args)``: training is exactly stock. One thing follows: a
   ``NAME.safetensors`` that an earlier plugin run left next to the ``NAME.model`` this
   run wrote is replaced by this run's model, with a warning in the log (otherwise the
   grid model would sit silently next to the new e3nn ``NAME.model``).
4. Otherwise it runs MACE's ``run(args)`` with these temporary, restored-on-exit
   substitutions in MACE's namespaces, made through :mod:`._seam` (seam 3; no
   ``forward`` is touched):

   - ``mace.cli.run_train.configure_model``: builds the model inside
     :func:`~mace_gaunt_plugin.use_backend`, logs the backend and its options, and
     checks the built model really uses that backend;
   - ``mace.tools.train.train_one_epoch``: logs once which kernel each plugin module
     runs on the model's device (``kernel=auto`` resolved), then calls
     ``backend.on_epoch_start(model, epoch, steps_per_epoch)`` before every epoch
     (0-based epoch, also after a restart; ``steps_per_epoch`` = batches per epoch on
     this rank; ``model`` is the bare model, not the DDP wrapper);
   - ``mace.tools.CheckpointHandler``: every checkpoint also stores
     ``{"tp_backend": {"name", "options", "plugin_version"}}`` and a guard that stops a
     process reading it without the plugin (stock MACE would skip it silently and train
     from scratch over it; see :mod:`._checkpoint`), and loading one with another backend
     raises;
   - ``mace.cli.run_train.extract_config_mace_model`` (used for the
     ``config.yaml`` inside ``NAME_compiled.model``): also reads plugin product modules
     and records ``tp_backend`` / ``tp_backend_options``;
   - ``mace.cli.run_train.init_distributed`` / ``DDP`` with ``--distributed --device
     cpu``: a gloo process group and a CPU DistributedDataParallel (MACE 0.3.16 itself
     only initialises NCCL/CCL).

5. After ``run`` returns (rank 0): if the backend overrides ``before_save``, every model
   file ``run`` wrote (``NAME.model``, ``NAME_stagetwo.model`` and their copies in the
   checkpoints directory) is replaced by ``backend.before_save(model)`` and
   ``NAME_compiled.model`` / ``NAME_stagetwo_compiled.model`` are compiled again from it
   (MACE's error tables, printed before, are of the model as trained). A missing
   ``NAME_compiled.model`` (MACE hides compile errors) is compiled again here so that the
   reason is logged. ``NAME.model`` and ``NAME_stagetwo.model`` are also written as safe
   model files, ``NAME.safetensors`` and ``NAME_stagetwo.safetensors`` (data only; see
   :mod:`mace_gaunt_plugin.mace._safe_file`).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from ..errors import BackendError, BackendMismatchError, BackendOptionError
from ._checkpoint import CHECKPOINT_KEY
from ._config import extract_config

__all__ = ["main", "install", "build_parser", "BackendChoice", "CHECKPOINT_KEY"]

STOCK = "e3nn"


@dataclass(frozen=True)
class BackendChoice:
    """The backend a run uses: registered name and resolved options (defaults filled in)."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """What checkpoints store."""
        from .. import __version__

        return {"name": self.name, "options": dict(self.options), "plugin_version": __version__}

    def with_defaults(self) -> "BackendChoice":
        """The options with today's defaults filled in: a record written before an option
        existed means that option's default (new options default to the former behaviour).
        Unchanged if the backend is not installed (that is reported elsewhere)."""
        from .. import registry

        if self.name == STOCK or self.name not in registry.available_backends():
            return self
        return BackendChoice(self.name, registry.get_backend(self.name).resolve_options(self.options))

    def describe(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in sorted(self.options.items())) or "no options"
        return f"{self.name!r} ({opts})"


# --------------------------------------------------------------------------- parsing


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """MACE's formatter (defaults shown) that keeps our backend table's line breaks."""

    def _get_help_string(self, action: argparse.Action) -> Optional[str]:
        if action.dest in ("tp_backend", "tp_option"):
            return action.help  # their help says what "unset" means
        return super()._get_help_string(action)


def _backend_table() -> str:
    from ..registry import _BROKEN, available_backends, get_backend

    lines = ["Backends and their options (give options as --tp-option KEY=VALUE, repeatable):"]
    for name in available_backends():
        backend = get_backend(name)
        default = " (default)" if name == STOCK else ""
        lines.append(f"  {name}{default}: {backend.description}")
        if not backend.options:
            lines.append("      no options")
        for opt in backend.options:
            choices = f" [{', '.join(map(str, opt.choices))}]" if opt.choices is not None else ""
            lines.append(f"      {opt.name}={opt.default}{choices}: {opt.help}")
    for name, why in sorted(_BROKEN.items()):
        lines.append(f"  {name}: installed but failed to load: {why}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser, describe: bool = True) -> None:
    """Add ``--tp-backend`` and ``--tp-option`` (each also spelled with ``_``) to MACE's
    parser. ``describe=False`` leaves out the table of backends (which imports every
    backend), for runs that do not print the help."""
    from ..registry import available_backends

    parser.formatter_class = _HelpFormatter
    names = ", ".join(available_backends()) if describe else "see --help"
    group = parser.add_argument_group(
        "TP backend (mace-gaunt-plugin)",
        "How the model's equivariant tensor products are computed; saved with the model.\n"
        + (_backend_table() if describe else ""),
    )
    group.add_argument(
        "--tp-backend",
        "--tp_backend",
        dest="tp_backend",
        metavar="NAME",
        default=None,
        help=f"tensor-product backend, one of: {names}. "
        f"Unset: '{STOCK}' (stock MACE), or with --restart_latest the backend of the checkpoint",
    )
    group.add_argument(
        "--tp-option",
        "--tp_option",
        dest="tp_option",
        metavar="KEY=VALUE",
        action="append",
        default=None,
        help="an option of the chosen backend (repeatable; see the table above)",
    )


def build_parser(prog: Optional[str] = None, describe: bool = True) -> argparse.ArgumentParser:
    """MACE's ``mace_run_train`` parser with the plugin's arguments added."""
    from mace.tools import build_default_arg_parser

    parser = build_default_arg_parser()
    if prog:
        parser.prog = prog
    add_arguments(parser, describe)
    return parser


def _parse_options(items: Optional[Sequence[str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise BackendOptionError(f"--tp-option expects KEY=VALUE, got {item!r}")
        if key in out:
            raise BackendOptionError(f"--tp-option {key} given twice ({out[key]!r} and {value!r}); give it once")
        out[key] = value.strip()
    return out


# --------------------------------------------------------------------------- checks before run


def _checked_copy(args: argparse.Namespace) -> Optional[argparse.Namespace]:
    """MACE's own ``check_args`` on a copy: derived paths and hidden irreps. ``None`` when
    MACE rejects the arguments (its own ``run`` then reports that, as stock)."""
    from mace import tools

    try:
        checked, _ = tools.check_args(copy.deepcopy(args))
    except Exception:  # noqa: BLE001  (MACE's run repeats the check and reports it)
        return None
    return checked


def _model_config(args: argparse.Namespace) -> dict[str, Any]:
    """The MACE constructor arguments that the command line fixes before any data is read."""
    from e3nn import o3
    from mace import modules

    def irreps(value: Any) -> Any:
        return o3.Irreps(value) if value else None

    config: dict[str, Any] = {
        "r_max": getattr(args, "r_max", None),
        "max_ell": getattr(args, "max_ell", None),
        "num_interactions": getattr(args, "num_interactions", None),
        "correlation": getattr(args, "correlation", None),
        "hidden_irreps": irreps(getattr(args, "hidden_irreps", None)),
        "edge_irreps": irreps(getattr(args, "edge_irreps", None)),
        "MLP_irreps": irreps(getattr(args, "MLP_irreps", None)),
        "use_so3": bool(getattr(args, "use_so3", False)),
        "use_reduced_cg": bool(getattr(args, "use_reduced_cg", False)),
        "use_agnostic_product": bool(getattr(args, "use_agnostic_product", False)),
        "use_edge_irreps_first": bool(getattr(args, "use_edge_irreps_first", False)),
    }
    for key, arg in (("interaction_cls", "interaction"), ("interaction_cls_first", "interaction_first")):
        name = getattr(args, arg, None)
        if name in modules.interaction_classes:
            config[key] = modules.interaction_classes[name]
    return config


def _checkpoint_to_resume(directory: str, tag: str) -> Optional[Path]:
    """The checkpoint ``--restart_latest`` resumes, chosen as MACE 0.3.16's
    ``CheckpointIO`` chooses it: the highest epoch among ``TAG_epoch-N_swa.pt`` if any,
    else among ``TAG_epoch-N.pt``; ``None`` if there is none."""
    pattern = re.compile(rf"^{re.escape(tag)}_epoch-(\d+)(_swa)?\.pt$")
    if not os.path.isdir(directory):
        return None
    found = [(bool(m.group(2)), int(m.group(1)), f) for f in os.listdir(directory)
             if (m := pattern.match(f)) and os.path.isfile(os.path.join(directory, f))]  # fmt: skip
    if not found:
        return None
    swa = [c for c in found if c[0]]
    return Path(directory) / max(swa or found, key=lambda c: c[1])[2]


def _checkpoint_choice(path: Path) -> BackendChoice:
    from ._checkpoint import read_checkpoint

    try:
        checkpoint = read_checkpoint(str(path), map_location="cpu", mmap=True)
    except Exception as exc:  # noqa: BLE001  (any reason: the message names the file)
        raise BackendError(
            f"--restart_latest: cannot read the checkpoint it would resume, {path} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). Remove or replace that file to resume from an "
            "older one, or start a new run (another --name or --checkpoints_dir)."
        ) from None
    record = checkpoint.get(CHECKPOINT_KEY) if isinstance(checkpoint, dict) else None
    if record is None:  # written by stock MACE
        return BackendChoice(STOCK, {})
    return BackendChoice(str(record["name"]), dict(record.get("options", {})))


def _restart_choice(args: argparse.Namespace, checked: Optional[argparse.Namespace]) -> Optional[BackendChoice]:
    """The backend of the checkpoint ``--restart_latest`` would resume (the only file opened),
    ``None`` if there is none."""
    from mace import tools

    if not getattr(args, "restart_latest", False):
        return None
    work_dir = getattr(args, "work_dir", ".")
    directory = checked.checkpoints_dir if checked is not None else (args.checkpoints_dir or os.path.join(work_dir, "checkpoints"))
    tag = tools.get_tag(name=args.name, seed=args.seed)
    path = _checkpoint_to_resume(directory, tag)
    return _checkpoint_choice(path) if path is not None else None


def _load_model_file(path: str) -> Any:
    """The ``--foundation_model`` file the user named: a pickled model, so MACE itself
    unpickles it too (weights_only=False is needed for a pickled module)."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)


def _check_foundation(args: argparse.Namespace, name: str) -> None:
    """Fine-tuning rebuilds the model from the foundation model's config: refuse it with a
    plugin backend, and refuse a foundation model file that is a plugin model."""
    from ._build import backend_of

    foundation = getattr(args, "foundation_model", None)
    if foundation is None:
        return
    if name != STOCK:
        raise BackendMismatchError(
            f"--foundation_model with TP backend {name!r} is not supported: MACE fine-tuning rebuilds the model "
            "from the foundation model's config and copies e3nn weights into it, which would silently give a stock "
            "model. Fine-tune with the 'e3nn' backend, or train the plugin model from scratch."
        )
    if os.path.isfile(foundation):
        found = backend_of(_load_model_file(foundation))
        if found != STOCK:
            raise BackendMismatchError(
                f"--foundation_model {foundation} is a model with TP backend {found!r}: MACE fine-tuning rebuilds the "
                "model from its config and would silently drop that backend. Train with "
                f"--tp-backend {found} from scratch instead."
            )


def preflight(args: argparse.Namespace) -> Optional[BackendChoice]:
    """Check the plugin arguments against everything else; nothing is written.

    Returns
    -------
    BackendChoice or None
        The backend to train with, or ``None`` for a stock MACE run (no plugin
        arguments and nothing to resume with a plugin backend).

    Raises
    ------
    BackendError
        With a message that says what to change.
    """
    from .. import registry
    from ._build import check_model_config

    given = _parse_options(args.tp_option)
    checked = _checked_copy(args)
    resumed = _restart_choice(args, checked)
    if resumed is not None:
        resumed = resumed.with_defaults()

    if args.tp_backend is not None:
        name = args.tp_backend
    elif resumed is not None:
        name = resumed.name
    else:
        name = STOCK
    explicit = bool(given) or args.tp_backend is not None
    if not explicit and name == STOCK:
        _check_foundation(args, STOCK)
        return None  # stock MACE: no backend is loaded, nothing is substituted
    backend = registry.get_backend(name)
    if given or args.tp_backend is not None or resumed is None:
        try:
            options = backend.resolve_options(given)
        except BackendOptionError as exc:
            if args.tp_backend is not None:
                raise
            raise BackendOptionError(f"{exc}; choose the backend with --tp-backend NAME") from None
    else:
        options = dict(resumed.options)
    choice = BackendChoice(name, options)

    if resumed is not None and (resumed.name, dict(resumed.options)) != (choice.name, dict(choice.options)):
        raise BackendMismatchError(
            f"--restart_latest: the checkpoints of this run were trained with TP backend {resumed.describe()}, "
            f"but this command asks for {choice.describe()}. Leave out --tp-backend/--tp-option to resume with "
            "the checkpoint's backend, or start a new run (another --name or --checkpoints_dir)."
        )

    plugin = choice.name != STOCK
    if plugin and (getattr(args, "enable_cueq", False) or getattr(args, "only_cueq", False) or getattr(args, "enable_oeq", False)):
        raise BackendMismatchError(
            f"TP backend {choice.name!r} cannot be combined with --enable_cueq/--only_cueq/--enable_oeq: MACE "
            "converts the model by rebuilding it from its config, which would drop the plugin backend. "
            "Use one or the other (cuEquivariance/OpenEquivariance apply to the 'e3nn' backend)."
        )
    _check_foundation(args, choice.name)
    if plugin and checked is not None:
        check_model_config(backend, choice.options, _model_config(checked))
    if plugin:
        backend.check_device(choice.options, str(getattr(args, "device", "cpu")))

    return choice


# --------------------------------------------------------------------------- the run


def _configure_model_with(choice: BackendChoice, stock: Callable) -> Callable:
    from .. import __version__
    from ._build import verify_backend
    from ._hook import use_backend

    def configure_model(args: Any, *rest: Any, **kwargs: Any) -> Any:
        logging.info(f"TP backend: {choice.describe()} (mace-gaunt-plugin {__version__})")
        with use_backend(choice.name, **dict(choice.options)):
            model, output_args = stock(args, *rest, **kwargs)
        verify_backend(model, choice.name, choice.options)
        n_plugin = sum(1 for m in model.modules() if hasattr(m, "backend_name"))
        logging.info(f"TP backend {choice.name!r}: {n_plugin} plugin modules in the model")
        return model, output_args

    return configure_model


def _log_kernels(model: Any) -> None:
    """Log, once per run, the kernel each plugin module type runs on the model's device
    (modules with ``kernel_in_use()``, e.g. the grid/gaunt conv with ``kernel=auto``)."""
    found = sorted({(type(m).__name__, str(m.kernel_in_use())) for m in model.modules() if callable(getattr(m, "kernel_in_use", None))})
    if found:
        device = next((p.device for p in model.parameters()), "cpu")
        logging.info(f"TP backend kernels on {device}: " + ", ".join(f"{name} runs {kernel!r}" for name, kernel in found))


def _train_one_epoch_with(backend: Any, stock: Callable) -> Callable:
    import inspect

    signature = inspect.signature(stock)

    logged: list[bool] = []

    def train_one_epoch(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        model = bound.arguments["model"]
        if not logged:  # the model is on its device now: say which kernels run there
            logged.append(True)
            _log_kernels(model)
        backend.on_epoch_start(model, int(bound.arguments["epoch"]), len(bound.arguments["data_loader"]))
        return stock(*args, **kwargs)

    return train_one_epoch


def _checkpoint_handler_with(choice: BackendChoice) -> type:
    """MACE's ``CheckpointHandler`` whose checkpoints carry the backend record and the guard
    against stock MACE (:mod:`._checkpoint`), and that refuses another backend's checkpoint."""
    from . import _seam
    from ._checkpoint import guarded, read_checkpoint

    record = choice.record()

    def check(checkpoint: Mapping[str, Any]) -> None:
        held = checkpoint.get(CHECKPOINT_KEY) or {"name": STOCK, "options": {}}
        held_choice = BackendChoice(str(held["name"]), dict(held.get("options", {}))).with_defaults()
        if (held_choice.name, dict(held_choice.options)) != (record["name"], record["options"]):
            raise BackendMismatchError(
                f"checkpoint holds TP backend {held['name']!r} {held.get('options', {})}, "
                f"the model was built with {record['name']!r} {record['options']}"
            )

    return _seam.checkpoint_handler_class(
        write=lambda checkpoint: guarded(checkpoint, record),
        check=check,
        read=lambda path, device: read_checkpoint(path, map_location=device),
    )


def _cpu_distributed(stock_init: Callable) -> Callable:
    import torch.distributed

    def init_distributed(args: Any) -> Any:
        rank, local_rank, world_size = stock_init(args)
        if args.distributed and args.device == "cpu" and not torch.distributed.is_initialized():
            torch.distributed.init_process_group(backend="gloo", init_method="env://", rank=rank, world_size=world_size)
        return rank, local_rank, world_size

    return init_distributed


def _cpu_ddp(stock_ddp: type) -> Callable:
    def ddp(module: Any, device_ids: Any = None, **kwargs: Any) -> Any:
        on_cpu = all(p.device.type == "cpu" for p in module.parameters())
        return stock_ddp(module, device_ids=None if on_cpu else device_ids, **kwargs)

    return ddp


def _saved_model_paths(args: Any) -> list[tuple[Path, Optional[Path]]]:
    """(pickled model, its compiled twin or None) for every model file ``run`` writes."""
    from mace import tools

    tag = tools.get_tag(name=args.name, seed=args.seed)
    model_dir = Path(args.model_dir)
    ckpt_dir = Path(args.checkpoints_dir)
    return [
        (model_dir / f"{args.name}.model", model_dir / f"{args.name}_compiled.model"),
        (model_dir / f"{args.name}_stagetwo.model", model_dir / f"{args.name}_stagetwo_compiled.model"),
        (ckpt_dir / f"{tag}.model", None),
        (ckpt_dir / f"{tag}_stagetwo.model", None),
    ]


def _compile(model: Any, path: Path, extra_files: Mapping[str, Any]) -> None:
    import torch
    from e3nn.util import jit

    compiled = jit.compile(copy.deepcopy(model))
    torch.jit.save(compiled, str(path), _extra_files=dict(extra_files))


def _write_safe_twin(model: Any, model_path: Path) -> None:
    """``NAME.safetensors`` next to ``NAME.model`` (see :func:`mace_gaunt_plugin.save_model`);
    a model the format cannot hold is logged, the pickled model stays usable."""
    from ._safe_file import default_converted_path, save_model

    out = default_converted_path(str(model_path))
    try:
        save_model(model, out)
        logging.info(f"Safe model file (data only, safe to share) saved to {out}")
    except Exception as exc:  # noqa: BLE001  (reported; training itself succeeded)
        logging.error(f"Could not write the safe model file {out} ({type(exc).__name__}: {exc})")
        if os.path.isfile(out):  # an earlier run's: it must not pass for this run's model
            os.remove(out)
            logging.warning(f"Removed {out}, written by an earlier run: it does not hold the model of {model_path}")


def _refresh_stale_twins(args: Any, started: float) -> None:
    """After a stock run (no plugin backend): a ``NAME.safetensors`` that an earlier run left
    next to the ``NAME.model`` this run wrote is replaced by this run's model, with a
    warning, so that the two files never hold different models. Nothing is written where
    there was no safe model file (a stock run stays stock)."""
    import torch

    from ._build import backend_of
    from ._safe_file import default_converted_path, read_header

    for model_path, compiled_path in _saved_model_paths(args):
        twin = Path(default_converted_path(str(model_path)))
        if compiled_path is None or not twin.is_file() or not model_path.is_file() or model_path.stat().st_mtime < started:
            continue
        model = torch.load(model_path, weights_only=False)  # written by this run
        try:
            was = repr(read_header(twin).get("backend"))
        except Exception:  # noqa: BLE001  (whatever it held, it is replaced)
            was = "unknown"
        logging.warning(
            f"{twin} held a model of an earlier run (TP backend {was}); replacing it by this run's model "
            f"(TP backend {backend_of(model)!r}, {model_path}) so that the two files agree"
        )
        _write_safe_twin(model, model_path)


def _finish_saved_models(args: Any, backend: Any) -> None:
    """Apply ``backend.before_save`` to the files ``run`` wrote; make sure the compiled
    model exists (MACE hides compile errors) and log why if it cannot be made."""
    import torch

    from ..backends.base import TPBackend
    from mace.tools.scripts_utils import convert_to_json_format

    rewrite = type(backend).before_save is not TPBackend.before_save
    for model_path, compiled_path in _saved_model_paths(args):
        if not model_path.is_file():
            continue
        model = None
        if rewrite:
            model = backend.before_save(torch.load(model_path, weights_only=False))
            torch.save(model, model_path)
            logging.info(f"TP backend {backend.name!r}: before_save applied to {model_path}")
        if compiled_path is not None:  # NAME.model, NAME_stagetwo.model: also as a safe model file
            model = model if model is not None else torch.load(model_path, weights_only=False)  # written by this run
            _write_safe_twin(model, model_path)
        if compiled_path is None or (compiled_path.is_file() and not rewrite):
            continue
        if model is None:
            model = torch.load(model_path, weights_only=False)
        extra = {"commit.txt": b"", "config.yaml": json.dumps(convert_to_json_format(extract_config(model)))}
        try:
            _compile(model, compiled_path, extra)
            logging.info(f"Compiled model saved to {compiled_path}")
        except Exception as exc:  # noqa: BLE001  (reported, the pickled model stays usable)
            logging.error(f"Could not compile {model_path} to TorchScript ({type(exc).__name__}: {exc}); {compiled_path} is missing")


def run(args: argparse.Namespace, choice: BackendChoice) -> None:
    """MACE's ``run(args)`` with the backend ``choice`` (see the module docstring)."""
    import importlib

    import mace.cli.run_train as run_train

    from .. import registry
    from . import _seam

    backend = registry.get_backend(choice.name)
    train_module = importlib.import_module("mace.tools.train")
    with contextlib.ExitStack() as stack:
        def substitute(target: str, value: Any) -> None:
            stack.enter_context(_seam.substituted(target, value))

        substitute("mace.cli.run_train.configure_model", _configure_model_with(choice, run_train.configure_model))
        substitute("mace.tools.train.train_one_epoch", _train_one_epoch_with(backend, train_module.train_one_epoch))
        substitute("mace.tools.CheckpointHandler", _checkpoint_handler_with(choice))
        substitute("mace.cli.run_train.extract_config_mace_model", extract_config)
        if args.distributed and args.device == "cpu":
            substitute("mace.cli.run_train.init_distributed", _cpu_distributed(run_train.init_distributed))
            substitute("mace.cli.run_train.DDP", _cpu_ddp(run_train.DDP))
        run_train.run(args)
    if not args.distributed or int(os.environ.get("RANK", "0")) == 0:
        _finish_saved_models(args, backend)


# --------------------------------------------------------------------------- entry points


def main(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> None:
    """``mace_run_train`` with ``--tp-backend``: parse, check, train (see module docstring)."""
    from . import _seam

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        _seam.require_compatible()
    except BackendError as exc:
        sys.exit(f"{prog or os.path.basename(sys.argv[0]) or 'mace_run_train'}: error: {exc}")
    parser = build_parser(prog, describe=any(a in ("-h", "--help") for a in argv))
    args = parser.parse_args(argv)
    try:
        choice = preflight(args)
    except BackendError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    del args.tp_backend, args.tp_option
    if choice is None:
        import time

        import mace.cli.run_train as run_train

        checked, started = _checked_copy(args), time.time()
        run_train.run(args)
        if checked is not None and (not args.distributed or int(os.environ.get("RANK", "0")) == 0):
            _refresh_stale_twins(checked, started)
        return
    run(args, choice)


main._mace_gaunt_plugin = True  # type: ignore[attr-defined]


def install(module: Any) -> None:
    """Make :func:`main` the ``main`` of ``mace.cli.run_train`` (called by the start-up hook;
    idempotent)."""
    from . import _seam

    _seam.install_main(module, main)
