"""The one seam to MACE (``mace_gaunt_plugin.mace._seam``): it finds every way an
installed MACE differs from what the plugin substitutes or reads, names them in one
error, refuses undeclared substitutions, and no other module writes into MACE or e3nn."""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest

import mace_gaunt_plugin as mgp
from mace_gaunt_plugin.errors import IncompatibleMaceError
from mace_gaunt_plugin.mace import _seam, _train

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "mace_gaunt_plugin"


def test_the_installed_mace_is_compatible() -> None:
    assert _seam.PROBLEMS == ()
    assert _seam.incompatibilities() == []


def _changed_product_factory(irreps_in, irreps_out, order):  # noqa: ANN001, ANN202  (a MACE that renamed a parameter)
    raise AssertionError("never called")


def _train_without_epochs(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202  (a MACE whose train no longer calls train_one_epoch)
    return None


def test_each_kind_of_change_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import mace.modules.blocks as blocks
    import mace.tools.checkpoint as checkpoint

    train_module = importlib.import_module("mace.tools.train")
    monkeypatch.setattr(blocks, "SymmetricContractionWrapper", _changed_product_factory)
    monkeypatch.setattr(train_module, "train", _train_without_epochs)
    monkeypatch.delattr(checkpoint.CheckpointIO, "_parse_checkpoint_path")
    problems = _seam.incompatibilities()
    assert len(problems) == 3, problems
    assert "mace.modules.blocks.SymmetricContractionWrapper takes (irreps_in, irreps_out, order)" in problems[0] + problems[1] + problems[2]
    assert any("mace.tools.train.train no longer looks up 'train_one_epoch'" in p for p in problems)
    assert any(p == "mace.tools.checkpoint.CheckpointIO._parse_checkpoint_path is gone" for p in problems)


def test_an_interaction_block_that_stops_using_the_names_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import mace.modules as modules

    class NewInteraction(modules.interaction_classes["RealAgnosticResidualInteractionBlock"]):
        def _setup(self) -> None:  # builds its conv some other way
            self.conv_tp = None

    monkeypatch.setitem(modules.interaction_classes, "NewInteraction", NewInteraction)
    problems = _seam.incompatibilities()
    assert problems == [
        "NewInteraction._setup no longer looks up 'TensorProduct' by name",
        "NewInteraction._setup no longer looks up 'tp_out_irreps_with_instructions' by name",
    ]


def test_an_incompatible_mace_stops_every_entry_point_with_one_message(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    problems = ("mace.modules.blocks.TensorProduct is gone", "mace.cli.run_train.run is gone")
    monkeypatch.setattr(_seam, "PROBLEMS", problems)
    with pytest.raises(IncompatibleMaceError) as info:
        with mgp.use_backend("grid"):
            pass
    message = str(info.value)
    assert all(p in message for p in problems) and "0.3.16" in message and "MACE_GAUNT_PLUGIN_DISABLE=1" in message
    with pytest.raises(IncompatibleMaceError):
        mgp.build_model("grid")
    with pytest.raises(SystemExit) as stop:
        _train.main(["--help"], prog="mace_run_train")
    assert "mace_run_train: error: mace-gaunt-plugin cannot hook into" in str(stop.value.code)
    assert problems[0] in str(stop.value.code)


def test_only_declared_substitutions_and_they_are_restored() -> None:
    import mace.modules.blocks as blocks

    with pytest.raises(KeyError, match="not a substitution the seam declares"):
        with _seam.substituted("mace.modules.blocks.Linear", object()):
            pass
    stock = blocks.TensorProduct
    marker = object()
    with pytest.raises(RuntimeError):
        with _seam.substituted("mace.modules.blocks.TensorProduct", marker):
            assert blocks.TensorProduct is marker
            raise RuntimeError("inside")
    assert blocks.TensorProduct is stock


def _writes_into_foreign_modules(path: Path) -> list[str]:
    """Assignments to attributes of, and ``setattr`` on, names bound by ``import mace...`` /
    ``import e3nn...`` / ``from mace... import ...`` in one source file."""
    tree = ast.parse(path.read_text(), str(path))
    foreign: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            foreign |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name.split(".")[0] in ("mace", "e3nn")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("mace", "e3nn") and not node.level:
            foreign |= {a.asname or a.name for a in node.names}
    found = []
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
        for target in targets:
            root = target
            while isinstance(root, ast.Attribute):
                root = root.value
            if target is not root and isinstance(root, ast.Name) and root.id in foreign:
                found.append(f"{path.name}:{node.lineno}: assigns {ast.unparse(target)}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("setattr", "delattr"):
            if node.args and isinstance(node.args[0], ast.Name) and node.args[0].id in foreign:
                found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_module_but_the_seam_writes_into_mace_or_e3nn(tmp_path: Path) -> None:
    sources = sorted(PACKAGE.rglob("*.py")) + sorted((REPO / "lammps_interface").rglob("*.py"))
    assert len(sources) > 40
    offenders = [w for p in sources if p.name != "_seam.py" for w in _writes_into_foreign_modules(p)]
    assert offenders == []
    # the scan finds such a write (it can fail)
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import mace.modules.blocks as blocks\nfrom mace.cli import run_train\nblocks.TensorProduct = 1\n"
        "setattr(run_train, 'main', 2)\nblocks.InteractionBlock.__init__ = 3\nlocal = 4\n"
    )
    assert len(_writes_into_foreign_modules(sample)) == 3


def test_importing_the_seam_never_raises_for_incompatibility(monkeypatch: pytest.MonkeyPatch) -> None:
    """``import mace.cli.run_train`` runs the start-up hook, which imports the seam: stock use
    of MACE must keep working when the seam does not fit; only the plugin's entry points stop."""
    import mace.modules.blocks as blocks

    monkeypatch.delattr(blocks, "tp_out_irreps_with_instructions")
    try:
        importlib.reload(_seam)
        assert _seam.PROBLEMS and "mace.modules.blocks.tp_out_irreps_with_instructions is gone" in _seam.PROBLEMS
    finally:
        monkeypatch.undo()
        importlib.reload(_seam)
    assert _seam.PROBLEMS == ()


# ------------------------------------------------- seam 8: the layered LAMMPS core
def test_the_installed_mace_forward_is_what_the_layered_core_replicates() -> None:
    assert _seam.LAYERED_PROBLEMS == ()
    assert _seam.layered_forward_problems() == []


def test_a_forward_that_reads_something_new_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import mace.modules as modules
    import mace.modules.models as models

    def forward(self, data, training=False):  # noqa: ANN001, ANN202  (a MACE with a new feature)
        return self.spin_embedding(data)

    class NewInteraction(modules.interaction_classes["RealAgnosticResidualInteractionBlock"]):
        def forward(self, node_attrs, node_feats, edge_attrs, edge_feats, edge_index):  # noqa: ANN001, ANN202
            raise AssertionError("never called")

    monkeypatch.setattr(models.ScaleShiftMACE, "forward", forward)
    monkeypatch.setitem(modules.interaction_classes, "NewInteraction", NewInteraction)
    problems = _seam.layered_forward_problems()
    assert problems == [
        "mace.modules.models.ScaleShiftMACE.forward now reads spin_embedding, which the layered LAMMPS core does not replicate",
        "NewInteraction.forward no longer takes cutoff, first_layer",
    ], problems
    assert not any("spin_embedding" in p for p in _seam.incompatibilities())  # training and the rest are unaffected


def test_the_layered_core_refuses_what_it_does_not_replicate(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from mace.modules.models import ScaleShiftMACE

    from mace_gaunt_plugin.mace._layered import LayeredMACE, UnsupportedModelError
    from mace_gaunt_plugin.testing import default_dtype, small_mace_config

    with default_dtype(torch.float64):
        model = mgp.build_model("e3nn", **small_mace_config())

    class MyMACE(ScaleShiftMACE):
        pass

    model.__class__ = MyMACE
    with pytest.raises(UnsupportedModelError, match="MACE and ScaleShiftMACE; this model is a MyMACE"):
        LayeredMACE(model)
    model.__class__ = ScaleShiftMACE
    model.joint_embedding = torch.nn.Identity()
    with pytest.raises(UnsupportedModelError, match="embedding_specs"):
        LayeredMACE(model)
    del model.joint_embedding
    monkeypatch.setattr(_seam, "LAYERED_PROBLEMS", ("mace.modules.models.MACE.forward is gone",))
    with pytest.raises(IncompatibleMaceError, match="MACE.forward is gone"):
        LayeredMACE(model)
