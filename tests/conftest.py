"""Session-wide test helpers: where ../shared lives, seeded single-threaded torch, an isolated $MICROMOTION_HOME."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(Path(__file__).resolve().parent) not in sys.path:  # shared helper modules here import by plain name
    sys.path.insert(0, str(Path(__file__).resolve().parent))
SHARED = Path(os.environ.get("MICROMOTION_SHARED", REPO.parent / "shared")).resolve()


def pytest_configure(config):
    os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only ../shared folder (fixtures, reference directions and faces). Missing → hard error."""
    if not (SHARED / "fixtures").is_dir():
        raise RuntimeError(f"../shared not found at {SHARED}; set MICROMOTION_SHARED to its path")
    return SHARED


@pytest.fixture(scope="session")
def fixtures_dir(shared_dir) -> Path:
    return shared_dir / "fixtures"


@pytest.fixture(scope="session")
def faces_dir(shared_dir) -> Path:
    return shared_dir / "reference" / "faces"


@pytest.fixture(scope="session")
def official_directions_dir(shared_dir) -> Path:
    return shared_dir / "reference" / "micromotion_directions"


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty $MICROMOTION_HOME under tmp_path, no weights mirror override, no proxies: 127.0.0.1 is reached
    directly (downloads in tests go to a local HTTP server only)."""
    h = tmp_path / "mmhome"
    monkeypatch.setenv("MICROMOTION_HOME", str(h))
    monkeypatch.delenv("MICROMOTION_WEIGHTS_BASE_URL", raising=False)
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return h
