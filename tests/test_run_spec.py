"""Every config key is classified once (dacl/run_spec.py): a new key that nobody classified fails here, so "which
override can change a result" never drifts between the run folder, the collector and the stale-run checks."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from dacl.engine.continual import ContinualConfig
from dacl.engine.trainer import RUNTIME_OPTIONS, TrainerConfig
from dacl.experiment_continual import RUNTIME_TRAINER_KEYS
from dacl.run_spec import (FOLDER_KEYS, RESULT_OPTIONS, RUNTIME_KEYS, classify, leaf_keys, migrate_legacy,
                           non_result_overrides, result_config)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def _composed(name: str, overrides_list: list[list[str]]) -> list[dict]:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return [OmegaConf.to_container(compose(name, overrides=o), resolve=False) for o in overrides_list]


def test_every_key_of_every_dacl_run_config_is_classified():
    variants = [[]] + [[f"{g}={o}"] for g in ("method", "benchmark", "model", "trainer") for o in _options(g)]
    variants += [[f"+experiment={o}"] for o in _options("experiment")]
    keys = {k for cfg in _composed("config", variants) for k in leaf_keys(cfg)}
    unclassified = sorted(k for k in keys if classify(k, "run") is None)
    assert not unclassified, f"classify these keys in dacl/run_spec.py (result or runtime): {unclassified}"


def test_every_key_of_every_dacl_continual_config_is_classified():
    variants = [[f"stream={s}", f"strategy={t}"] for s in _options("stream") for t in _options("strategy")]
    keys = {k for cfg in _composed("continual", variants) for k in leaf_keys(cfg)}
    unclassified = sorted(k for k in keys if classify(k, "continual") is None)
    assert not unclassified, f"classify these keys in dacl/run_spec.py (result or runtime): {unclassified}"


@pytest.mark.parametrize("config_cls, kind, prefix, elsewhere, process", [
    (TrainerConfig, "run", "trainer.", set(), set()),
    # scenario and joint come from the top level and the strategy file; device and threads are the process's
    (ContinualConfig, "continual", "trainer.", {"scenario", "joint"}, set(RUNTIME_TRAINER_KEYS)),
])
def test_every_loop_option_is_classified(config_cls, kind, prefix, elsewhere, process):
    fields = {f.name for f in dataclasses.fields(config_cls)} - elsewhere | process
    classified = {k[len(prefix):] for k in RESULT_OPTIONS[kind] | RUNTIME_KEYS[kind] if k.startswith(prefix)}
    assert fields == classified, f"unclassified: {fields - classified}; stale: {classified - fields}"
    assert not RESULT_OPTIONS[kind] & RUNTIME_KEYS[kind]


@pytest.mark.parametrize("name, kind", [("config", "run"), ("continual", "continual")])
def test_run_folders_leave_out_exactly_the_non_result_keys(name, kind):
    cfg = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    assert set(cfg["hydra"]["job"]["config"]["override_dirname"]["exclude_keys"]) == non_result_overrides(kind)
    assert FOLDER_KEYS[kind] <= non_result_overrides(kind)


def test_runtime_options_come_from_the_one_classification():
    assert RUNTIME_OPTIONS == {k.split(".", 1)[1] for k in RUNTIME_KEYS["run"] if k.startswith("trainer.")}
    assert {"threads", "progress", "resume", "device"} <= RUNTIME_OPTIONS and "lr" not in RUNTIME_OPTIONS


def test_a_run_recorded_before_a_runtime_option_existed_is_the_same_configuration():
    old = {"stream": {"name": "split_mnist"}, "trainer": {"lr": 0.001, "steps_per_task": 10, "threads": 1}}
    new = {"stream": {"name": "split_mnist"}, "trainer": {"lr": 0.001, "steps_per_task": 10, "resume": True,
                                                          "ckpt_every": 50, "log_every": 5, "threads": 2}}
    assert result_config(old, "continual") == result_config(new, "continual")
    changed = {**new, "trainer": {**new["trainer"], "lr": 0.01}}
    assert result_config(changed, "continual") != result_config(old, "continual")
    assert new["trainer"]["resume"] is True, "the caller's config is not modified"


def test_continual_records_in_the_old_train_schema_read_as_trainer():
    """Continual runs once recorded train.* and top-level threads/device; their records stay comparable."""
    legacy = {"stream": {"name": "split_mnist"}, "train": {"lr": 0.001, "steps_per_task": 10}, "threads": 1,
              "device": "auto"}
    now = {"stream": {"name": "split_mnist"}, "trainer": {"lr": 0.001, "steps_per_task": 10, "threads": 2,
                                                          "device": "cpu"}}
    assert migrate_legacy(legacy, "continual")["trainer"] == {"lr": 0.001, "steps_per_task": 10, "threads": 1,
                                                              "device": "auto"}
    assert result_config(migrate_legacy(legacy, "continual"), "continual") == result_config(now, "continual")
    assert migrate_legacy(now, "continual") == now and migrate_legacy(legacy, "run") == legacy
