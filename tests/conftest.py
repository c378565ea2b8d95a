"""Shared fixtures: configs composed from the real Hydra files, tiny offline data, the shared-data root."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DACL_DATA_ROOT", REPO.parent / "shared" / "data"))

# Under pytest-xdist (`make test`: a worker per core) each worker computes on one thread: two workers of two threads
# on two cores ran the learning tests 3x slower. The learning tests' margins hold at one thread and at two.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, torch.get_num_threads()))


def compose_config(*overrides: str):
    """The real configs/ tree, composed like `dacl run` would, with test-sized overrides."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


TINY = ("benchmark=synthetic_shift", "trainer.max_steps=30", "trainer.batch_size=32", "trainer.eval_every=10",
        "trainer.log_every=10", "trainer.progress=false", "trainer.device=cpu")


@pytest.fixture
def tiny_config():
    def make(*overrides: str):
        return compose_config(*TINY, *overrides)

    return make


@pytest.fixture(scope="session")
def synthetic_pair():
    from dacl.registry import BENCHMARKS

    return BENCHMARKS.build("synthetic_shift")


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED / "mnist.npz").is_file():
        pytest.skip(f"needs the shared benchmark data (mnist.npz) at {SHARED}; set DACL_DATA_ROOT to run these tests")
    return SHARED


def _files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.is_dir() else set()


@pytest.fixture(scope="session", autouse=True)
def repository_runs_stay_untouched():
    """No test may write into the repository's runs/ (a user's real runs live there)."""
    before = _files_under(REPO / "runs")
    yield
    added = sorted(_files_under(REPO / "runs") - before)
    assert not added, f"tests wrote into {REPO / 'runs'}: {added[:5]}"
