"""The one-way layers of pyproject.toml's [tool.importlinter] hold (also run by .ci/run as `lint-imports`),
and the checker itself fails on a violation, so a contract that cannot fail is not mistaken for one that holds."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def lint_imports(config: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    return subprocess.run([exe, "--no-cache", "--config", str(config)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_the_layers_hold():
    result = lint_imports(ROOT / "pyproject.toml")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_a_contract_is_broken_by_an_upward_import(tmp_path):
    """The same contracts, with a layer order that the code cannot satisfy (core above detect): broken."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    start = text.index("[tool.importlinter]")
    section = text[start:]
    assert '    "tradewatch.flows.core",\n]' in section
    inverted = section.replace('    "tradewatch.cli",\n', '    "tradewatch.flows.core",\n    "tradewatch.cli",\n', 1)
    inverted = inverted.replace('    "tradewatch.flows.core",\n]', ']', 1)
    config = tmp_path / "inverted.toml"
    config.write_text(inverted, encoding="utf-8")
    result = lint_imports(config)
    if "Could not find package" in result.stdout + result.stderr:
        pytest.fail("lint-imports cannot import tradewatch: " + result.stderr[-500:])
    assert result.returncode != 0 and "BROKEN" in result.stdout
