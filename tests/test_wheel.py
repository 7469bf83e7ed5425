"""The prebuilt wheel, installed as a user would: fresh venv, no compiler.

``wheels/build.sh`` runs once per session on a copy of the tree as git sees it
(tracked and unignored files, so no build/, .so or generated .c leak in), the
wheel goes into a fresh virtual environment, and the CLI and the API run there
with a PATH on which neither gcc/cc nor cython can be found.
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO, SAMPLE

pytestmark = pytest.mark.slow

COMPILERS = ("gcc", "cc", "c++", "clang", "cython", "cythonize")


def _run(cmd, **kw):
    res = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if res.returncode != 0:  # the command's own output, not pytest's dump of the env
        pytest.fail(f"{' '.join(map(str, cmd))} exited {res.returncode}\n"
                    f"--- stdout\n{res.stdout[-4000:]}\n--- stderr\n{res.stderr[-4000:]}", pytrace=False)
    return res


def _tree_copy(dest: Path) -> Path:
    """Copy the files git tracks or would track (a clean clone of the working tree)."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("the wheel check needs a git checkout of atlas_fast")
    listing = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO)
    for name in filter(None, listing.stdout.split("\0")):
        src = REPO / name
        if src.is_file():  # tracked files deleted in the tree are skipped
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def _no_compiler_env(venv: Path, home: Path) -> dict[str, str]:
    """The environment of a user machine without build tools: PATH is only the venv."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ATLAS_", "PYTHON", "CC", "CXX", "LDSHARED", "CFLAGS", "CYTHON"))}
    env.update(PATH=str(venv / "bin"), VIRTUAL_ENV=str(venv), HOME=str(home),
               XDG_CACHE_HOME=str(home / ".cache"), LC_ALL="C.UTF-8")
    for tool in COMPILERS:
        assert shutil.which(tool, path=env["PATH"]) is None, f"{tool} is reachable in the test env"
    return env


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    tree = _tree_copy(tmp_path_factory.mktemp("tree"))
    res = _run(["bash", "wheels/build.sh"], cwd=tree, env=dict(os.environ, PYTHON=sys.executable), timeout=900)
    path = Path(res.stdout.strip().splitlines()[-1])
    assert path.is_file() and "manylinux" in path.name, res.stdout
    print(f"built {path.name} ({path.stat().st_size / 1e6:.1f} MB)")
    return path


@pytest.fixture(scope="session")
def venv(wheel, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("venv")
    venv = root / "venv"
    home = root / "home"
    home.mkdir()
    _run([sys.executable, "-m", "venv", str(venv)])
    env = _no_compiler_env(venv, home)
    # Installed with no compiler on PATH too: a dependency that would need
    # building from source fails here, as it would for a user.
    pip_env = dict(env, HOME=os.environ.get("HOME", str(home)))  # keeps pip's cache
    _run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
         env=pip_env, cwd=root, timeout=600)
    return venv, env


def test_wheel_installs_and_runs_without_a_compiler(venv, tmp_path):
    venv_dir, env = venv
    db = tmp_path / "sample.sqlite"
    # cwd is outside the repo, so `import atlas_fast` can only find the installed copy.
    res = _run([venv_dir / "bin" / "atlas-fast", "process", str(SAMPLE), "--db", str(db), "-q"],
               env=env, cwd=tmp_path, timeout=120)
    assert "status" in res.stdout and "done" in res.stdout, res.stdout

    expect_so = sorted(p.stem for p in (REPO / "atlas_fast").glob("_*.pyx"))
    expect_data = sorted(p.relative_to(REPO / "atlas_fast").as_posix()
                         for pattern in ("rules/*.toml", "data/*") for p in (REPO / "atlas_fast").glob(pattern))
    check = textwrap.dedent(f"""
        import importlib, pathlib, shutil, sqlite3, sys
        import atlas_fast
        assert shutil.which("gcc") is None and shutil.which("cc") is None, "a compiler is reachable"
        try:
            import Cython
        except ImportError:
            pass
        else:
            raise AssertionError("Cython is importable in the wheel venv")
        pkg = pathlib.Path(atlas_fast.__file__).parent
        assert pkg.is_relative_to(sys.prefix), f"imported {{pkg}}, not the installed wheel"
        files = sorted(p.relative_to(pkg).as_posix() for p in pkg.rglob("*") if p.is_file())
        sources = [f for f in files if f.endswith((".pyx", ".pxd", ".c", ".h"))]
        assert not sources, f"compiled sources installed: {{sources}}"
        for mod in {expect_so!r}:
            assert any(f.startswith(mod + ".") and f.endswith(".so") for f in files), f"no {{mod}}.*.so"
            assert importlib.import_module("atlas_fast." + mod).__file__.endswith(".so")
        missing = sorted(set({expect_data!r}) - set(files))
        assert not missing, f"rules/model missing from the install: {{missing}}"
        conn = sqlite3.connect({str(db)!r})
        rows = conn.execute("SELECT label, error FROM messages").fetchall()
        assert len(rows) == 6, rows
        assert all(err is None and label in ("spam", "ham") for label, err in rows), rows
        print(atlas_fast.__version__, len(files), "files", sorted(label for label, _ in rows))
    """)
    res = _run([venv_dir / "bin" / "python", "-c", check], env=env, cwd=tmp_path, timeout=60)
    print(res.stdout)
