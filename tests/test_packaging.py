"""Guard: the wheel builds, installs into a fresh venv, imports every subpackage, and shadows nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SUBPACKAGES = ["seawatch", "seawatch.vision", "seawatch.streams", "seawatch.drone", "seawatch.service"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    wheels = list(out.glob("seawatch-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_contents(wheel: Path):
    names = zipfile.ZipFile(wheel).namelist()
    assert "seawatch/__init__.py" in names
    for pkg in SUBPACKAGES[1:]:
        assert pkg.replace(".", "/") + "/__init__.py" in names, pkg
    # model manifests travel with the package; weights, media, tests and data folders as packages never do
    assert any(n.startswith("seawatch/models/") and n.endswith(".yaml") for n in names)
    assert not any(n.endswith((".pt", ".pth", ".onnx", ".mp4", ".jpg")) for n in names)
    assert not any(n.startswith(("tests/", "seawatch/tests/", "datasets/", "models/")) for n in names)
    assert "seawatch/models/__init__.py" not in names and "seawatch/datasets/__init__.py" not in names
    # every package folder of the repo is in the wheel (pyproject lists packages explicitly)
    skip = {".venv", "tests", "build", "benchmarks", "scripts"}
    for init in REPO.rglob("__init__.py"):
        rel = init.relative_to(REPO)
        if rel.parts[0] in skip or rel.parts[0].startswith("."):
            continue
        assert f"seawatch/{rel.as_posix()}" in names, f"{rel.parent} is a package but not in pyproject's packages list"


def test_installs_in_fresh_venv_and_imports(wheel: Path, tmp_path: Path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    site = Path(subprocess.check_output([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    # third-party dependencies come from the test venv (read-only), the package itself only from the wheel
    (site / "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, text=True, timeout=300)
    code = (
        "import importlib, pkgutil, seawatch, sys\n"
        f"assert seawatch.__file__.startswith({str(site)!r}), seawatch.__file__\n"
        "mods = [m.name for m in pkgutil.walk_packages(seawatch.__path__, 'seawatch.')]\n"
        "for m in mods:\n"
        "    if m.endswith('__main__') or '.migrations' in m: continue  # alembic scripts run only under alembic\n"
        "    importlib.import_module(m)\n"
        "import importlib.util\n"
        "spec = importlib.util.find_spec('datasets')\n"
        "assert spec is None or 'seawatch' not in (spec.origin or ''), spec\n"
        "from seawatch.vision import registry\n"
        "assert registry.load_manifests(), 'no manifests packaged'\n"
        "print(len(mods))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    res = subprocess.run([py, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr
    assert int(res.stdout.strip()) >= 5


def test_repo_does_not_answer_import_datasets():
    # The data folders must never be importable packages that shadow Hugging Face's `datasets` or anything else.
    assert not (REPO / "datasets" / "__init__.py").exists()
    assert not (REPO / "models" / "__init__.py").exists()
    res = subprocess.run([sys.executable, "-c", "import importlib.util as u; s=u.find_spec('datasets'); print(s and s.origin)"],
                         capture_output=True, text=True, cwd="/", timeout=60)
    assert str(REPO) not in res.stdout


def test_cli_help_is_fast_and_lists_commands():
    res = subprocess.run([sys.executable, "-m", "seawatch", "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    for cmd in ("models", "detect", "bench"):
        assert cmd in res.stdout
    # heavy frameworks must not load on the CLI path
    res = subprocess.run([sys.executable, "-c", "import sys, seawatch.cli as c; c.build_parser(); print('torch' in sys.modules, 'ultralytics' in sys.modules)"],
                         capture_output=True, text=True, timeout=60)
    assert res.stdout.split() == ["False", "False"], res.stdout + res.stderr
