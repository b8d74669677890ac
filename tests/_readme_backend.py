"""The example backend of README's "Writing a backend", read from README.md itself: the
test that runs check_backend on it (tests/test_conformance_kit.py) installs it as its own
distribution, so the README's code is what CI checks."""

import re
from pathlib import Path

_README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
_SECTION = _README.split("## Writing a backend\n", 1)[1].split("\n## ", 1)[0]

# the first python block is the backend module; the toml block names its entry point
README_BACKEND_SOURCE = re.search(r"```python\n(.*?)```", _SECTION, re.S).group(1)
_ENTRY = re.search(r'```toml\n\[project\.entry-points\."(.+?)"\]\n(\w+) = "(.+?)"\n```', _SECTION)
README_ENTRY_POINTS = f"[{_ENTRY.group(1)}]\n{_ENTRY.group(2)} = {_ENTRY.group(3)}\n"
