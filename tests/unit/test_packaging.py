"""The wheel: its data files (SQL, patches) ship, and the build does not warn about them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from setuptools.config.setupcfg import read_configuration

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "jr_checkpoint"


def data_directories() -> set[str]:
    """Every directory of the package that holds a file other than Python source."""
    return {".".join(path.parent.relative_to(ROOT).parts)
            for path in PACKAGE.rglob("*")
            if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".py", ".pyc")}


def test_every_directory_with_data_files_is_a_listed_package():
    # A current setuptools prints one "Package 'jr_checkpoint.patches' is absent from the
    # `packages` configuration" warning per file otherwise (about 40 lines of `pip install`).
    packages = read_configuration(ROOT / "setup.cfg")["options"]["packages"]
    assert data_directories() <= set(packages)
    assert not [name for name in packages if "__pycache__" in name]


def test_the_wheel_holds_the_sql_and_the_patches(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source)
    shutil.copytree(PACKAGE, source / "jr_checkpoint", ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "--quiet", "--wheel-dir", str(tmp_path / "dist"), str(source)],
                           capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    [wheel] = (tmp_path / "dist").glob("jr_checkpoint-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {str(path.relative_to(ROOT)) for path in PACKAGE.rglob("*")
                if path.is_file() and "__pycache__" not in path.parts}
    assert expected <= names
    assert {"jr_checkpoint/sql/schema.sql", "jr_checkpoint/patches/README.md"} <= names
