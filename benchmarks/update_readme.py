"""Rewrite the "Latest numbers" blocks of ``benchmarks/README.md`` from the committed JSON.

Each block sits between ``<!-- summary: NAME -->`` and ``<!-- end summary -->`` and is
``summary_markdown(json)`` of the study that wrote ``results/NAME.json``
(``model_*``: ``bench_model.py``, ``accuracy_*``: ``bench_accuracy.py``). ``--check``
exits 1 when the README differs (``tests/test_benchmarks_format.py`` does the same).

Usage::

    python benchmarks/update_readme.py [--check]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"
BLOCK = re.compile(r"(<!-- summary: (?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- end summary -->)", re.S)
MODULES = {"model": "bench_model.py", "accuracy": "bench_accuracy.py"}


def _module(study: str):
    sys.path.insert(0, str(HERE))
    spec = importlib.util.spec_from_file_location(f"_readme_{study}", HERE / MODULES[study])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def render(text: str) -> str:
    """``text`` with every summary block regenerated from ``results/NAME.json``."""

    def block(m: re.Match) -> str:
        name = m.group("name")
        result = json.loads((HERE / "results" / f"{name}.json").read_text())
        body = _module(name.split("_", 1)[0]).summary_markdown(result)
        return m.group(1) + "\n" + body + "\n" + m.group(4)

    return BLOCK.sub(block, text)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="only report whether the README is up to date")
    args = p.parse_args(argv)
    old = README.read_text()
    new = render(old)
    if args.check:
        if new != old:
            raise SystemExit("benchmarks/README.md is out of date: run python benchmarks/update_readme.py")
        print("benchmarks/README.md is up to date")
        return
    README.write_text(new)
    print(f"updated {README} ({len(BLOCK.findall(old))} summary blocks)")


if __name__ == "__main__":
    main()
