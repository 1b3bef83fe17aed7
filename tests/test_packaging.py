"""What "two commands on a fresh machine" relies on: requirements.txt covers every import, pins
torch exactly, and nothing needs torchvision (it cannot load next to the CPU build of torch)."""
from __future__ import annotations

import ast
import re
import sys

import torch

from tests.conftest import ROOT

#: Import name -> distribution name, where they differ.
DISTRIBUTION = {"PIL": "pillow", "pywt": "pywavelets", "skimage": "scikit-image",
                "pytorch_msssim": "pytorch-msssim", "cv2": "opencv-python-headless"}
#: Optional features: their modules import these packages only on the code paths that use them.
OPTIONAL = {"utils/registration.py": "requirements-align.txt", "run_scripts/benchmark.py": "requirements-align.txt",
            "run_scripts/bench_ort_fusion.py": "requirements-dev.txt",  # the benchmark's onnxruntime contestant
            "run_scripts/demo.py": "requirements-demo.txt", "utils/video.py": "requirements-video.txt",
            "utils/synthetic_video.py": "requirements-video.txt",
            "utils/benchmarking_video.py": "requirements-video.txt"}


def requirements(name: str = "requirements.txt") -> dict[str, str]:
    """Distribution name (lower case) -> its version specifier, from a requirements file and the
    files it includes with ``-r``."""
    reqs = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r "):
            reqs.update(requirements(line[3:].strip()))
        elif line:
            name, spec = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(.*)", line).groups()
            reqs[name.lower()] = spec
    return reqs


def project_python_files():
    """The project's own .py files (not a virtual environment or a cache inside the checkout)."""
    skip = {"venv", "runs", "data_result", "__pycache__"}
    return sorted(p for p in ROOT.rglob("*.py")
                  if not any(part in skip or part.startswith(".") for part in p.relative_to(ROOT).parts))


def top_level_imports(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_every_third_party_import_is_in_requirements():
    """The product's imports are in requirements.txt (what a user installs); the tests' may also
    come from requirements-dev.txt. Test-only packages stay out of a user's environment."""
    files = project_python_files()
    assert len(files) > 30
    local = {p.stem for p in files} | {p.name for p in ROOT.iterdir() if p.is_dir()}
    user, dev = requirements(), requirements("requirements-dev.txt")
    missing = {}
    for path in files:
        rel = path.relative_to(ROOT)
        reqs = dev if rel.parts[0] == "tests" else {**user, **requirements(OPTIONAL[str(rel)])} \
            if str(rel) in OPTIONAL else user
        for name in top_level_imports(path) - set(sys.stdlib_module_names) - local:
            if DISTRIBUTION.get(name, name).lower() not in reqs:
                missing.setdefault(name, []).append(str(path.relative_to(ROOT)))
    assert not missing, f"imported but not in requirements.txt / requirements-dev.txt: {missing}"
    assert not {"pytest", "hypothesis", "scikit-image"} & set(user), "test-only packages in requirements.txt"
    assert "opencv-python-headless" not in user, "an optional feature's package in the core install"


def test_the_recorded_version_is_pyprojects():
    import configs
    assert f'version = "{configs.VERSION}"' in (ROOT / "pyproject.toml").read_text()


def test_no_torchvision_anywhere():
    users = [str(p.relative_to(ROOT)) for p in project_python_files() if "torchvision" in top_level_imports(p)]
    assert not users
    assert "torchvision" not in requirements()


def test_torch_pinned_to_one_release_and_tested_on_it():
    # A range that admits a newer release makes pip fetch the newest CUDA build (GBs) instead of
    # the local CPU wheel; any build of the pinned release (+cpu, +cu...) satisfies ==.
    spec = requirements()["torch"]
    assert re.fullmatch(r"==\d+\.\d+\.\d+", spec), spec
    assert torch.__version__.split("+")[0] == spec[2:]


def test_dockerfile_installs_requirements_unchanged():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^RUN pip install --no-cache-dir -r requirements\.txt$", text, re.M)
    assert "torch" not in re.sub(r"#.*", "", text)  # no second, different torch
