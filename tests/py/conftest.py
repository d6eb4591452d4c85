"""Shared pytest fixtures: where the build and the data live."""
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("REALM_BUILD", ROOT / "build"))
SHARED = pathlib.Path(os.environ.get("REALM_SHARED", ROOT.parent / "shared"))
MODELS = pathlib.Path(os.environ.get("REALM_MODELS", pathlib.Path.home() / ".cache/realm/models"))


@pytest.fixture(scope="session")
def realm_bin():
    exe = BUILD / "realm"
    if not exe.exists():
        pytest.fail(f"{exe} not built (run make)")
    return str(exe)


@pytest.fixture(scope="session")
def stories():
    p = SHARED / "models/stories260K.gguf"
    if not p.exists():
        pytest.skip("../shared/models/stories260K.gguf not found")
    return p


def model_path(name):
    p = MODELS / name
    if not p.exists():
        pytest.skip(f"{p} not cached (scripts/fetch-models.sh)")
    return p
