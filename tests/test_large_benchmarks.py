"""The large-benchmark data path on synthetic trees in each benchmark's published layout: loaders, the streaming
path (same batches as the in-memory stream, resumable, worker-count independent), downloads, timm backbones, and
each published recipe end to end for a few steps."""
from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import REPO, compose_config

from dacl.data.download import Download, ensure, fetch, unpack
from dacl.data.layouts import LAYOUTS, read_image_list
from dacl.data.stream import BatchStream
from dacl.data.synth import write_synthetic
from dacl.errors import ConfigError, DataError
from dacl.registry import BENCHMARKS, DATASETS, STREAMS

SMALL = {"image_size": 32, "resize": 36, "workers": 0}


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> Path:
    """One synthetic copy of every benchmark (small: the whole module writes it once)."""
    root = tmp_path_factory.mktemp("synthetic")
    for name, images in [("office31", 186), ("officehome", 260), ("visda2017", 48), ("domainnet", 120),
                         ("cifar10", 100), ("cifar100", 200), ("cifar10_c", 20), ("tiny_imagenet", 400),
                         ("imagenet_c", 2)]:
        write_synthetic(name, root, images)
    return root


@pytest.mark.parametrize("name,source,target", [("office31", "amazon", "webcam"), ("officehome", "Art", "Clipart"),
                                                ("visda2017", "Synthetic", "Real"), ("domainnet", "clipart", "real")])
def test_image_list_benchmark_loads_its_layout_streamed_and_in_memory_alike(trees, name, source, target):
    lay = LAYOUTS[name]
    streamed = BENCHMARKS.get(name)(source=source, target=target, data_root=str(trees), storage="stream", **SMALL)
    whole = BENCHMARKS.get(name)(source=source, target=target, data_root=str(trees), storage="memory", **SMALL)
    assert streamed.num_classes == whole.num_classes == lay.num_classes
    root = trees / lay.folder
    _, src_labels = read_image_list(root, lay.list_file(source, "train"), lay.num_classes)
    _, tgt_test_labels = read_image_list(root, lay.list_file(target, "test"), lay.num_classes)
    sizes = streamed.sizes()
    assert sizes == whole.sizes()
    assert sizes["source_train"] + sizes["source_val"] == len(src_labels)
    assert sizes["target_test"] == len(tgt_test_labels)
    # label mapping: the list's labels, in the list's order
    assert torch.equal(streamed.target_test[1], torch.as_tensor(tgt_test_labels))
    assert sorted(torch.cat([streamed.source_train[1], streamed.source_val[1]]).tolist()) == sorted(src_labels.tolist())
    # one batch: test-pipeline images decode to the same tensors on either path
    idx = torch.tensor([0, 2, 1])
    batch = streamed.target_test[0][idx]
    assert batch.shape == (3, 3, 32, 32) and batch.dtype == torch.float32
    assert torch.equal(batch, whole.target_test[0][idx])
    assert isinstance(whole.target_test[0], torch.Tensor) and not isinstance(streamed.target_test[0], torch.Tensor)


def test_auto_storage_streams_only_what_exceeds_the_budget(trees):
    kw = dict(source="amazon", target="webcam", data_root=str(trees), **SMALL)
    assert isinstance(BENCHMARKS.get("office31")(storage="auto", memory_budget_mb=1024, **kw).source_train[0], torch.Tensor)
    assert not isinstance(BENCHMARKS.get("office31")(storage="auto", memory_budget_mb=0, **kw).source_train[0], torch.Tensor)


def _streamed_train_images(trees: Path, workers: int):
    pair = BENCHMARKS.get("office31")(source="amazon", target="webcam", data_root=str(trees), storage="stream",
                                      image_size=32, resize=36, workers=workers)
    return pair.source_train[0]


def test_prefetch_stream_draws_the_batch_stream_sequence_and_resumes_mid_epoch_exactly(trees):
    images = _streamed_train_images(trees, workers=0)
    n = len(images)
    plain = BatchStream(n, 16, seed=7, device="cpu")
    follow = images.follow(BatchStream(n, 16, seed=7, device="cpu"))
    seen = []
    for _ in range(12):  # crosses epoch boundaries (n ~ 56)
        idx = follow.next_indices()
        assert torch.equal(idx, plain.next_indices())
        seen.append(images[idx])
    # resume from the state after 5 batches: the next batches (augmentation included) are bitwise the same
    replay = images.follow(BatchStream(n, 16, seed=7, device="cpu"))
    first = images.follow(BatchStream(n, 16, seed=7, device="cpu"))
    for _ in range(5):
        images[first.next_indices()]
    replay.load_state_dict(first.state_dict())
    for k in range(5, 12):
        assert torch.equal(images[replay.next_indices()], seen[k])
    assert not torch.equal(seen[0], seen[1])


def test_augmentation_does_not_depend_on_the_number_of_workers(trees):
    def batches(workers: int) -> list[torch.Tensor]:
        images = _streamed_train_images(trees, workers)
        follow = images.follow(BatchStream(len(images), 8, seed=3, device="cpu"))
        return [images[follow.next_indices()] for _ in range(4)]

    for a, b in zip(batches(0), batches(2)):
        assert torch.equal(a, b)


def test_streamed_evaluation_batches_are_the_whole_test_set_in_order(trees):
    from dacl.metrics import predict_in_batches

    pair = BENCHMARKS.get("office31")(source="amazon", target="webcam", data_root=str(trees), storage="stream", **SMALL)
    x = pair.target_test[0]
    means = predict_in_batches(lambda b: b.mean(dim=(1, 2, 3), keepdim=False).unsqueeze(1), x, batch_size=7)
    assert means.shape == (len(x), 1)
    assert torch.allclose(means[:, 0], x[torch.arange(len(x))].mean(dim=(1, 2, 3)))


def test_cifar_binary_cifar10c_tiny_imagenet_and_imagenet_c_read_their_layouts(trees):
    c10 = DATASETS.get("cifar10")(data_root=str(trees))
    assert c10.x_train.shape == (100, 32, 32, 3) and c10.num_classes == 10
    assert c10.y_train.tolist() == [i % 10 for i in range(20)] * 5  # five batch files, labels as written
    c100 = DATASETS.get("cifar100")(data_root=str(trees))
    assert c100.num_classes == 100 and c100.x_test.shape[1:] == (32, 32, 3)
    c10c = DATASETS.get("cifar10_c")(corruption="fog", severity=3, data_root=str(trees))
    assert len(c10c.x_test) == 20 and c10c.y_test.tolist() == [i % 10 for i in range(20)]
    with pytest.raises(DataError, match="unknown CIFAR-10-C corruption"):
        DATASETS.get("cifar10_c")(corruption="rain", data_root=str(trees))
    suite = BENCHMARKS.get("cifar10_c")(target={"corruption": "all", "severity": 3}, data_root=str(trees))
    assert [d.name for d in suite.target_domains][:2] == ["gaussian_noise@3", "shot_noise@3"]
    assert len(suite.target_domains) == 15 and suite.target_domains[-1].stop == len(suite.target_test[1]) == 15 * 20
    fog = next(d for d in suite.target_domains if d.name == "fog@3")
    single = BENCHMARKS.get("cifar10_c")(target={"corruption": "fog", "severity": 3}, data_root=str(trees))
    assert torch.equal(suite.target_test[0][fog.start:fog.stop], single.target_test[0])
    tiny = DATASETS.get("tiny_imagenet")(data_root=str(trees))
    assert tiny.x_train.shape == (400, 64, 64, 3) and tiny.num_classes == 200 and len(tiny.x_test) == 200
    from dacl.data.imagenet import imagenet_c_files

    files, labels = imagenet_c_files(trees / "ImageNet-C", "snow", 2)
    assert len(files) == 2 and labels.tolist() == [0, 1]


def test_imagenet_c_benchmark_pairs_clean_images_with_one_corruption_cell(trees, tmp_path):
    pair = BENCHMARKS.get("imagenet_c")(corruption="snow", severity=2, data_root=str(trees), image_size=32, resize=36,
                                        workers=0)
    assert pair.num_classes == 10 and pair.name == "imagenet_c_snow2"
    assert pair.sizes()["source_train"] + pair.sizes()["source_val"] == 10
    assert pair.target_test[1].tolist() == [0, 1] and pair.target_test[0][torch.tensor([1])].shape == (1, 3, 32, 32)
    from dacl.experiment import run_experiment

    cfg = compose_config("method=tent", "benchmark=imagenet_c", "benchmark.corruption=snow", "benchmark.severity=2",
                         "benchmark.image_size=32", "benchmark.resize=36", "benchmark.workers=0", "model=timm",
                         "model.name=resnet10t", "model.pretrained=false", "trainer.max_steps=2", "trainer.batch_size=4",
                         "trainer.eval_every=2", "trainer.progress=false", "trainer.device=cpu", f"data_root={trees}")
    res = run_experiment(cfg, tmp_path)
    assert res["kind"] == "tta" and res["benchmark"] == "imagenet_c_snow2"


def test_continual_streams_over_the_new_datasets(trees):
    split = STREAMS.get("split_cifar10")(data_root=str(trees))
    assert len(split) == 5 and split.tasks[0].classes == (0, 1) and split.tasks[0].train[0].shape[1:] == (3, 32, 32)
    tiny = STREAMS.get("seq_tinyimagenet")(data_root=str(trees))
    assert len(tiny) == 10 and len(tiny.tasks[3].classes) == 20 and tiny.tasks[0].train[0].shape[1:] == (3, 64, 64)
    assert len(STREAMS.get("split_cifar100")(data_root=str(trees))) == 10


def test_a_missing_dataset_names_the_layout_it_expects(tmp_path):
    with pytest.raises(DataError, match=r"office31/image_list/amazon.txt.*dacl data synth office31"):
        BENCHMARKS.get("office31")(source="amazon", target="webcam", data_root=str(tmp_path))
    with pytest.raises(DataError, match="cifar-10-batches-bin"):
        DATASETS.get("cifar10")(data_root=str(tmp_path))


def test_an_unreadable_image_is_one_error_line_naming_the_file_even_from_a_worker(tmp_path):
    write_synthetic("office31", tmp_path, 93)
    lay = LAYOUTS["office31"]
    first = (tmp_path / lay.folder / "image_list" / "webcam.txt").read_text().split()[0]
    (tmp_path / lay.folder / first).write_text("not a jpeg")
    pair = BENCHMARKS.get("office31")(source="amazon", target="webcam", data_root=str(tmp_path), storage="stream",
                                      image_size=32, resize=36, workers=1)
    with pytest.raises(DataError) as err:
        pair.target_test[0][torch.tensor([0, 1])]
    assert str(err.value).count("\n") == 0 and first in str(err.value) and "remove it" in str(err.value)


def test_a_malformed_image_list_line_is_named(trees, tmp_path):
    (tmp_path / "image_list").mkdir()
    (tmp_path / "image_list" / "x.txt").write_text("a.jpg 0\nb.jpg seven\n")
    with pytest.raises(DataError, match=r"x.txt:2"):
        read_image_list(tmp_path, "image_list/x.txt", 31)


# --- downloads --------------------------------------------------------------------------------------------------
def _served(tmp_path: Path, payload: bytes) -> tuple[str, str]:
    src = tmp_path / "mirror" / "data.bin"
    src.parent.mkdir()
    src.write_bytes(payload)
    return src.as_uri(), hashlib.md5(payload).hexdigest()


def test_download_resumes_a_partial_file_and_verifies_its_checksum(tmp_path):
    payload = bytes(range(256)) * 4000
    url, md5 = _served(tmp_path, payload)
    dest = tmp_path / "root" / "data.bin"
    dest.parent.mkdir()
    dest.with_name("data.bin.part").write_bytes(payload[:300_000])  # an interrupted earlier attempt
    assert fetch(url, dest, md5).read_bytes() == payload
    assert not dest.with_name("data.bin.part").exists()
    with pytest.raises(DataError, match="checksum mismatch"):
        fetch(url, tmp_path / "root" / "other.bin", "0" * 32)
    assert not (tmp_path / "root" / "other.bin").exists() and not (tmp_path / "root" / "other.bin.part").exists()


def test_ensure_fetches_and_unpacks_once_and_refuses_escaping_archive_members(tmp_path):
    archive = tmp_path / "mirror" / "image_list.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("image_list/amazon.txt", "amazon/images/back_pack/a.jpg 0\n")
    root = tmp_path / "office31"
    spec = Download(archive.as_uri(), "image_list.zip", hashlib.md5(archive.read_bytes()).hexdigest(), "image_list")
    ensure(root, [spec], "office31")
    assert (root / "image_list" / "amazon.txt").read_text().startswith("amazon/")
    archive.unlink()  # already unpacked: nothing is fetched again
    ensure(root, [spec], "office31")
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../outside.txt", "x")
    with pytest.raises(DataError, match="outside"):
        unpack(evil, tmp_path / "into")
    assert not (tmp_path / "outside.txt").exists()


# --- models and optimisation ------------------------------------------------------------------------------------
def test_timm_backbone_by_name_loads_local_weights_and_rejects_unknown_names(tmp_path):
    from dacl.engine.weights import save_weights
    from dacl.models.backbones import TimmBackbone

    a = TimmBackbone(name="resnet10t", pretrained=False)
    save_weights(a.net.state_dict(), tmp_path / "r10t.safetensors")
    b = TimmBackbone(name="resnet10t", pretrained=True, weights=str(tmp_path / "r10t.safetensors"))  # no download
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert a.out_features == 512
    with pytest.raises(ConfigError, match="timm has no model"):
        TimmBackbone(name="resnet_does_not_exist")


def test_backbone_lr_multiplier_scales_only_the_backbone(synthetic_pair):
    from dacl.engine.trainer import Trainer, TrainerConfig
    from dacl.experiment import build_method

    method = build_method(compose_config("method=dann", "benchmark=synthetic_shift"), synthetic_pair)
    trainer = Trainer(method, synthetic_pair, TrainerConfig(max_steps=1, lr=0.01, backbone_lr_mult=0.1, progress=False))
    backbone = {id(p) for p in method.model.backbone.parameters()}
    for g in trainer.optimizer.param_groups:
        inside = {id(p) in backbone for p in g["params"]}
        assert len(inside) == 1
        assert g["lr"] == pytest.approx(0.001 if inside == {True} else 0.01)


# --- the DER plugin ----------------------------------------------------------------------------------------------
def test_der_stores_pre_update_logits_and_pulls_outputs_back_to_them():
    from dacl.methods.base import Batch, StepState
    from dacl.methods.cl.der import DarkExperienceReplay
    from dacl.registry import METHODS
    from dacl.models.classifier import build_classifier

    torch.manual_seed(0)
    method = METHODS.build("source_only")
    method.setup(build_classifier("mlp", 4, 1, 8, bottleneck_dim=0, hidden=(16,)), 4)
    der = DarkExperienceReplay(memory_size=64, batch_size=16, alpha=1.0, beta=0.0)
    method.add_plugin(der)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 4, (16,))
    state = StepState(0, 1, Batch(x, y, None))
    method.training_step(state)
    der.before_backward(state)
    with torch.no_grad():
        before = method.model(x)
    der.after_update(state)
    assert int(der.buffer.size) == 16
    assert torch.allclose(der.buffer.z[:16], before)  # the logits of the forward before the update
    opt = torch.optim.SGD(method.model.parameters(), lr=0.05)
    with torch.no_grad():  # drift the network away from what it stored
        for p in method.model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    losses = []
    for _ in range(30):
        state = StepState(0, 1, Batch(x, y, None))
        der.before_backward(state)
        losses.append(float(state.losses["der_logits"]))
        opt.zero_grad()
        state.losses["der_logits"].backward()
        opt.step()
    assert losses[-1] < 0.3 * losses[0]


# --- the published recipes, a few steps each on synthetic trees ---------------------------------------------------
RECIPE_SMALL = ("model.name=resnet10t", "model.pretrained=false", "trainer.max_steps=20", "trainer.eval_every=10",
                "trainer.batch_size=4", "benchmark.image_size=32", "benchmark.resize=36", "benchmark.workers=0",
                "trainer.progress=false", "trainer.device=cpu")


@pytest.mark.slow
@pytest.mark.parametrize("experiment,extra", [
    ("office31_tllib", ()), ("office31_tllib_cdan", ()),
    ("officehome_tllib", ("benchmark.source=Art", "benchmark.target=Clipart")),
    ("officehome_tllib_cdan", ("benchmark.source=Art", "benchmark.target=Clipart")),
    ("visda2017_tllib", ()), ("visda2017_tllib_cdan", ())])
def test_tllib_recipe_runs_end_to_end_on_its_synthetic_tree(trees, tmp_path, experiment, extra):
    from dacl.experiment import run_experiment

    cfg = compose_config(f"+experiment={experiment}", *RECIPE_SMALL, *extra, f"data_root={trees}")
    assert cfg.trainer.backbone_lr_mult == 0.1 and cfg.model.backbone == "timm"
    res = run_experiment(cfg, tmp_path)
    assert res["status"] == "ok" and res["steps"] == 20
    assert res["data_sizes"]["target_test"] > 0 and (tmp_path / "results.json").is_file()


@pytest.mark.slow
def test_tent_cifar10c_recipe_runs_end_to_end(trees, tmp_path):
    from dacl.experiment import run_experiment

    cfg = compose_config("+experiment=cifar10c_tent", "model.depth=10", "model.widen=1", "trainer.max_steps=20",
                         "trainer.batch_size=32",
                         "trainer.eval_every=10", "trainer.progress=false", "trainer.device=cpu",
                         "benchmark.target.corruption=fog", f"data_root={trees}")
    assert cfg.tta.batch_size == 200 and cfg.method.optimizer == "adam"
    res = run_experiment(cfg, tmp_path)
    assert res["kind"] == "tta" and 0.0 <= res["metrics"]["target_test_acc"]["last"] <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["replay", "der", "derpp"])
def test_split_cifar10_replay_recipes_run_end_to_end(trees, tmp_path, strategy):
    from hydra import compose, initialize_config_dir

    from dacl.experiment_continual import run_continual

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("continual", overrides=["stream=split_cifar10", f"strategy={strategy}", "scenario=class",
                                              "trainer.epochs_per_task=null", "trainer.steps_per_task=4",
                                              "+model.width=16", "trainer.device=cpu", f"data_root={trees}"])
    assert cfg.trainer.optimizer == "sgd" and cfg.trainer.momentum == 0.0 and cfg.trainer.batch_size == 32
    res = run_continual(cfg, tmp_path)
    assert len(res["metrics"]["accuracy_matrix"]) == 5
