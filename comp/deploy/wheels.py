"""`comp export --wheels`: the wheels `comp infer` needs, for `pip install --no-index` where there is no network.

Only what `comp infer` imports (INFER_DISTS and what they require), never training-only packages
(optuna, matplotlib, albumentations, timm unless a bundled run is a timm model): torch alone is
hundreds of MB. Each is pinned to the version installed here, so the notebook runs the code the
bundle was checked with; `--pin torch==2.13.0+cpu` overrides a pin (e.g. a CPU-only torch, whose
wheel `--find-links DIR` points to: PyPI's Linux torch pulls the CUDA libraries, gigabytes).
Install them with `pip install --no-index --find-links wheels --no-deps wheels/*.whl`: --no-deps
because comp's own metadata also lists its training-only dependencies.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from ..io import CompError

# What `comp infer` imports: comp.ensemble needs scipy and scikit-learn for the blend methods.
INFER_DISTS = ("torch", "numpy", "pandas", "pillow", "tqdm", "scipy", "scikit-learn")
TIMM_DISTS = ("timm",)
# comp: only comp's own wheel (a Kaggle notebook has torch, numpy, pandas ... already)
WHEEL_SCOPES = ("all", "comp")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _public(version: str) -> str:
    """2.14.1+cu130 -> 2.14.1: a local build tag names a wheel only its own index has."""
    return version.split("+")[0]


def pinned(roots, pins=(), version=metadata.version) -> list[str]:
    """'name==version' for each root, at the version installed here (--pin NAME==VERSION overrides one);
    `version` is importlib.metadata's (tests pass a fake)."""
    overrides = {}
    for pin in pins:
        name, sep, ver = pin.partition("==")
        if not sep or not name or not ver:
            raise CompError(f"--pin {pin!r}: write NAME==VERSION, e.g. torch==2.13.0+cpu")
        overrides[_canonical(name)] = ver
    unknown = set(overrides) - {_canonical(r) for r in roots}
    if unknown:
        raise CompError(f"--pin {', '.join(sorted(unknown))}: not a package comp infer needs ({', '.join(roots)})")
    lines = []
    for root in roots:
        name = _canonical(root)
        if name not in overrides:
            try:
                overrides[name] = _public(version(name))
            except metadata.PackageNotFoundError:
                raise CompError(f"--wheels: {name} is needed by `comp infer` but is not installed here") from None
        lines.append(f"{name}=={overrides[name]}")
    return lines


def source_root() -> Path:
    root = Path(__file__).resolve().parents[2]  # comp/deploy/wheels.py -> the checkout
    if not (root / "pyproject.toml").exists():
        raise CompError(f"--wheels builds comp's wheel from its source, but {root} has no pyproject.toml "
                        f"(comp was installed from a wheel): export from a checkout of comp")
    return root


def collect_wheels(dest: Path, scope: str = "all", needs_timm: bool = False, pins=(), find_links=(),
                   run=subprocess.run) -> list[str]:
    """Build comp's wheel into `dest`; with scope "all" also download the pinned run-time packages and
    what they require (pip resolves those from the wheels' own metadata). Returns the pinned lines."""
    if scope not in WHEEL_SCOPES:
        raise CompError(f"--wheels {scope}: choose one of {', '.join(WHEEL_SCOPES)}")
    dest.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip"]
    with tempfile.TemporaryDirectory(prefix="comp-src-") as tmp:
        # a copy: setuptools writes build/ and *.egg-info into the tree it builds
        root = source_root()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(root / name, Path(tmp) / name)
        shutil.copytree(root / "comp", Path(tmp) / "comp", ignore=shutil.ignore_patterns("__pycache__"))
        _pip(run, pip + ["wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(dest), tmp])
    if scope == "comp":
        return []
    requirements = pinned(INFER_DISTS + (TIMM_DISTS if needs_timm else ()), pins)
    links = [arg for folder in find_links for arg in ("--find-links", str(folder))]
    _pip(run, pip + ["download", "--only-binary=:all:", "--dest", str(dest), *links, *requirements])
    return requirements


def _pip(run, command: list[str]) -> None:
    print("  " + " ".join(command[2:]))
    done = run(command)
    if done.returncode != 0:
        raise CompError(f"--wheels: `{' '.join(command[2:5])} ...` failed (exit {done.returncode}; pip's message "
                        f"is above): check the network to the package index, or pass --find-links DIR / --pin")
