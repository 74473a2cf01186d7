"""The wheel built from this repository installs into a clean venv and works there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent


def run(*command: str | Path, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [str(part) for part in command], cwd=cwd, capture_output=True, text=True, check=False, timeout=600
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def source_packages() -> set[str]:
    """Every package of the source tree, as the wheel must install it."""
    found = set()
    for top, prefix in (("kvcluster", "kvcluster"), ("journal", "kvcluster.journal"), ("router", "kvcluster.router"),
                        ("actors", "kvcluster.actors"), ("client", "kvcluster.client")):  # fmt: skip
        for directory, subdirs, files in os.walk(REPO / top):
            subdirs[:] = [d for d in subdirs if not (Path(directory) / d).is_symlink() and d != "__pycache__"]
            if "__init__.py" in files:
                relative = Path(directory).relative_to(REPO / top)
                found.add(".".join([prefix, *relative.parts]))
    return found


def test_wheel_installs_in_a_fresh_venv_and_runs(tmp_path: Path) -> None:
    # Build from a copy of the tracked files: a stale build/ directory must not hide a
    # package the project metadata forgot (it once did).
    source = tmp_path / "source"
    tracked = run("git", "ls-files", cwd=REPO).splitlines()
    for name in tracked:
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        origin = REPO / name
        if origin.is_symlink():
            target.symlink_to(os.readlink(origin))
        elif origin.exists():
            shutil.copy2(origin, target)
    wheels = tmp_path / "wheels"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", wheels, source)
    (wheel,) = wheels.glob("kvcluster-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert top_level == {"kvcluster", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    for package in source_packages():
        assert package.replace(".", "/") + "/__init__.py" in names, f"the wheel lacks {package}"
    assert "kvcluster/py.typed" in names

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    run(python, "-m", "pip", "install", "--quiet", wheel)
    script = (
        "import sys, kvcluster.journal as j\n"
        "assert 'site-packages' in j.__file__, j.__file__\n"
        "with j.VersionedStore.open(sys.argv[1]) as s:\n"
        "    ts = s.set('ns', 'k', {'v': 1})\n"
        "print(j.recover_at(sys.argv[1], ts))\n"
    )
    store = tmp_path / "store"
    out = run(python, "-c", script, store, cwd=tmp_path)  # cwd outside the repo: no source tree on sys.path
    assert "{('ns', 'k'): ({'v': 1}," in out
    assert "valid" in run(venv / "bin" / "kvcluster", "verify", store, cwd=tmp_path)
    assert not os.path.exists(venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
                              / "site-packages" / "journal")  # fmt: skip
