"""Office-Caltech-10 at native resolution (read in place from the tar, or from an extracted tree) and the frozen-feature
cache (identity, reuse, damage), on a synthetic tree here and on the real tar where ../shared/data has it."""
import io
import logging
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from dacl.data.feature_cache import Transform, cached_features
from dacl.data.office import OFFICE_CALTECH_CLASSES, office_caltech_files
from dacl.errors import DataError
from dacl.registry import BENCHMARKS

DOMAINS = ("amazon", "webcam")


COLOURS = ((200, 30, 30), (30, 200, 30), (30, 30, 200))  # one hue per class, so features can tell classes apart


def _jpeg(rng, size, colour=(128, 128, 128)):
    noise = rng.integers(-40, 40, (size, size + 11, 3))
    pixels = np.clip(np.asarray(colour) + noise, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG")
    return buf.getvalue()


def _write_tree(root, per_class=2, seed=0, classes=OFFICE_CALTECH_CLASSES[:3]):
    rng = np.random.default_rng(seed)
    for d in DOMAINS:
        for k, c in enumerate(classes):
            folder = root / "office_caltech10" / d / c
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                (folder / f"frame_{i:04d}.jpg").write_bytes(_jpeg(rng, 40 + 8 * i, COLOURS[k % len(COLOURS)]))
    return root


def _tar_of(tree, path):
    with tarfile.open(path, "w") as tar:
        tar.add(tree / "office_caltech10", arcname="office_caltech10")
    return path


@pytest.fixture
def tree(tmp_path):
    return _write_tree(tmp_path / "tree")


def test_tar_in_place_and_extracted_tree_give_the_same_images_and_labels(tree, tmp_path):
    archive = _tar_of(tree, tmp_path / "office_caltech10_images.tar")
    from_tar = BENCHMARKS.build("office_caltech_images", source="amazon", target="webcam", data_root=str(tmp_path),
                                image_size=32, resize=36, storage="memory", workers=0, val_fraction=0.5)
    from_tree = BENCHMARKS.build("office_caltech_images", source="amazon", target="webcam", path=str(tree),
                                 image_size=32, resize=36, storage="memory", workers=0, val_fraction=0.5)
    assert archive.is_file()
    for a, b in ((from_tar.target_test, from_tree.target_test), (from_tar.source_val, from_tree.source_val)):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert from_tar.target_test[1].tolist() == [0, 0, 1, 1, 2, 2]  # fixed class order, then file name
    assert from_tar.num_classes == 10 and from_tar.target_test[0].shape == (6, 3, 32, 32)
    streamed = BENCHMARKS.build("office_caltech_images", source="amazon", target="webcam", data_root=str(tmp_path),
                                image_size=32, resize=36, workers=0, val_fraction=0.5)
    batch = streamed.source_train[0][torch.arange(3)]
    assert batch.shape == (3, 3, 32, 32) and torch.isfinite(batch).all()


def test_a_truncated_or_bad_image_is_one_error_naming_the_file(tree, tmp_path):
    bad = tree / "office_caltech10" / "webcam" / OFFICE_CALTECH_CLASSES[1] / "frame_0001.jpg"
    bad.write_bytes(bad.read_bytes()[:200])  # a JPEG cut short
    archive = _tar_of(tree, tmp_path / "office_caltech10_images.tar")
    pair = BENCHMARKS.build("office_caltech_images", source="amazon", target="webcam", path=str(archive),
                            image_size=32, resize=36, storage="stream", workers=0)
    with pytest.raises(DataError, match="webcam/bike/frame_0001.jpg"):
        torch.cat(list(pair.target_test[0].batches(8)))
    cut = tmp_path / "cut" / "office_caltech10_images.tar"
    cut.parent.mkdir()
    cut.write_bytes(archive.read_bytes()[:archive.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated|readable"):
        office_caltech_files(DOMAINS, path=str(cut))
    with pytest.raises(DataError, match="neither"):
        office_caltech_files(DOMAINS, data_root=str(tmp_path / "cut" / "nothing"))


class _TinyBackbone(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.out_features = 4

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


def test_feature_cache_reuses_an_entry_and_keys_it_by_identity(tree, tmp_path):
    files, labels = office_caltech_files(DOMAINS, path=str(tree))["amazon"]
    net, t = _TinyBackbone(), Transform(image_size=24, resize=28)
    first, prov = cached_features(net, "tiny", files, labels, t, tmp_path / "cache", workers=0)
    again, prov2 = cached_features(net, "tiny", files, labels, t, tmp_path / "cache", workers=0)
    assert prov["computed"] and not prov2["computed"] and prov["file"] == prov2["file"]
    assert torch.equal(first["features"], again["features"]) and first["features"].shape == (6, 4)
    other_size, prov3 = cached_features(net, "tiny", files, labels, Transform(image_size=20, resize=28),
                                        tmp_path / "cache", workers=0)
    assert prov3["computed"] and prov3["file"] != prov["file"]
    with torch.no_grad():
        net.conv.bias += 1.0  # other weights: another entry
    _, prov4 = cached_features(net, "tiny", files, labels, t, tmp_path / "cache", workers=0)
    assert prov4["computed"] and prov4["weights_sha256"] != prov["weights_sha256"]
    views, prov5 = cached_features(_TinyBackbone(), "tiny", files, labels, Transform(24, 28, views=2), tmp_path / "cache",
                                   workers=0)
    assert views["views"].shape == (2, 6, 4) and not torch.equal(views["views"][0], views["views"][1])
    assert torch.equal(views["features"], first["features"])
    repeat, _ = cached_features(_TinyBackbone(), "tiny", files, labels, Transform(24, 28, views=2), tmp_path / "fresh",
                                workers=0)
    assert torch.equal(repeat["views"], views["views"]), "seeded views must be reproducible"


def test_a_damaged_cache_entry_is_refused_and_recomputed(tree, tmp_path, caplog):
    files, labels = office_caltech_files(DOMAINS, path=str(tree))["webcam"]
    net, t = _TinyBackbone(), Transform(image_size=24, resize=28)
    good, prov = cached_features(net, "tiny", files, labels, t, tmp_path, workers=0)
    from pathlib import Path

    entry = Path(prov["file"])
    raw = bytearray(entry.read_bytes())
    raw[-5] ^= 0xFF  # flip bits inside the tensor data: the header still parses
    entry.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING):
        again, prov2 = cached_features(net, "tiny", files, labels, t, tmp_path, workers=0)
    assert prov2["computed"] and "damaged" in caplog.text
    assert torch.equal(again["features"], good["features"])
    entry.write_bytes(b"not a safetensors file")
    _, prov3 = cached_features(net, "tiny", files, labels, t, tmp_path, workers=0)
    assert prov3["computed"]


def test_features_benchmark_runs_dann_offline_through_the_cli_path(tmp_path):
    """`dacl run +experiment=office_caltech_lite0_features` end to end on a synthetic tree: real Lite0 weights,
    features cached, the run record naming the entries, a second run reading them."""
    from conftest import compose_config
    from dacl.experiment import run_experiment

    tree = _write_tree(tmp_path / "tree", per_class=4)
    tiny_config = lambda *o: compose_config("trainer.progress=false", "trainer.device=cpu", *o)  # noqa: E731
    overrides = ("+experiment=office_caltech_lite0_features", "method=dann", f"benchmark.path={tree}",
                 f"benchmark.cache_dir={tmp_path / 'cache'}", "benchmark.workers=0", "benchmark.val_fraction=0.25",
                 "trainer.max_steps=40", "trainer.eval_every=20", "trainer.batch_size=4", "trainer.save_model=false")
    res = run_experiment(tiny_config(*overrides), tmp_path / "run1")
    entries = res["data_provenance"]["feature_cache"]
    assert set(entries) == {"amazon", "webcam"} and all(e["computed"] for e in entries.values())
    assert res["data_sizes"]["target_test"] == 12 and res["status"] == "ok"
    assert entries["amazon"]["weights_sha256"].startswith("57934424")
    # the classes differ by hue: a head trained on real ImageNet features must separate them (chance is 1/3)
    assert res["metrics"]["source_test_acc"] >= 0.8 and res["metrics"]["target_test_acc"]["last"] >= 0.8, res["metrics"]
    res2 = run_experiment(tiny_config(*overrides, "method=source_only"), tmp_path / "run2")
    assert not any(e["computed"] for e in res2["data_provenance"]["feature_cache"].values())
    shallow = run_experiment(tiny_config("+experiment=office_caltech_lite0_shallow", "method.adapter=coral",
                                         f"benchmark.path={tree}", f"benchmark.cache_dir={tmp_path / 'cache'}",
                                         "benchmark.workers=0"), tmp_path / "run3")
    assert shallow["kind"] == "feature_space" and shallow["metrics"]["target_test_acc"]["fixed"] >= 0.8, shallow["metrics"]


@pytest.mark.shared_data
def test_real_tar_lists_every_published_image(shared_data):
    files = office_caltech_files(("amazon", "caltech10", "dslr", "webcam"), str(shared_data))
    assert {d: len(f[0]) for d, f in files.items()} == {"amazon": 958, "caltech10": 1123, "dslr": 157, "webcam": 295}
    assert all(np.bincount(y, minlength=10).min() > 0 for _, y in files.values())
    pair = BENCHMARKS.build("office_caltech_images", source="dslr", target="webcam", data_root=str(shared_data),
                            workers=0)
    x = pair.source_train[0][torch.arange(2)]
    assert x.shape == (2, 3, 224, 224) and torch.isfinite(x).all()


def test_lite0_fine_tuning_trains_the_trunk_at_a_tenth_of_the_lr_and_frozen_trains_none_of_it(tree, tmp_path):
    """The fine-tuning recipe on a synthetic tree: the ImageNet trunk moves; model.frozen=true keeps it (and its
    BatchNorm statistics) exactly as loaded while the bottleneck and head train."""
    from conftest import compose_config
    from dacl.engine.trainer import Trainer, TrainerConfig, seed_everything
    from dacl.experiment import build_benchmark, build_method
    from omegaconf import OmegaConf

    trunks = {}
    for frozen in (False, True):
        cfg = OmegaConf.to_container(compose_config(
            "+experiment=office_caltech_lite0_finetune", "method=dann", f"benchmark.path={tree}", "benchmark.workers=0",
            "benchmark.image_size=32", "benchmark.resize=36", "benchmark.val_fraction=0.34", "trainer.max_steps=2",
            "trainer.eval_every=2", "trainer.batch_size=4", "trainer.save_model=false", "trainer.progress=false",
            "trainer.device=cpu", f"model.frozen={str(frozen).lower()}"), resolve=True)
        data = build_benchmark(cfg, torch.device("cpu"))
        seed_everything(0)
        method = build_method(cfg, data)
        before = {k: v.clone() for k, v in method.model.backbone.state_dict().items()}
        head = method.model.head.weight.detach().clone()
        Trainer(method, data, TrainerConfig.from_dict(cfg["trainer"]), tmp_path / f"ft{frozen}").fit()
        after = method.model.backbone.state_dict()
        trunks[frozen] = any(not torch.equal(before[k], after[k]) for k in before)
        assert not torch.equal(head, method.model.head.weight), "the head must train in both cases"
    assert trunks[False], "fine-tuning must move the ImageNet trunk"
    assert not trunks[True], "a frozen trunk must keep its weights and BatchNorm statistics"


def test_budgeted_in_domain_splits_on_images_and_on_features(tree, tmp_path):
    from dacl.errors import ConfigError

    imgs = BENCHMARKS.build("office_caltech_images", source="amazon", target="amazon", path=str(tree), budget=1,
                            budget_seed=0, image_size=32, resize=36, storage="memory", workers=0)
    assert imgs.source_train[1].tolist() == [0, 1, 2] and len(imgs.target_test[1]) == 3
    assert torch.equal(imgs.source_val[0], imgs.source_train[0])
    feats = BENCHMARKS.build("office_caltech_features", source="amazon", target="amazon", path=str(tree), budget=1,
                             budget_seed=0, cache_dir=str(tmp_path / "c"), workers=0)
    assert feats.source_train[1].tolist() == [0, 1, 2] and feats.provenance["budget"]["test"] == 3
    assert feats.target_test[1].tolist() == imgs.target_test[1].tolist()
    with pytest.raises(ConfigError, match="benchmark.target=amazon"):
        BENCHMARKS.build("office_caltech_images", source="amazon", target="webcam", path=str(tree), budget=1)
