"""Office-style data: the ImageFolder layouts (generic and Office-31's nested images/), the shared npz, ResNet-18."""
import numpy as np
import pytest
import torch
from PIL import Image

from dacl.errors import DataError
from dacl.models.classifier import build_classifier
from dacl.registry import BENCHMARKS, DATASETS


def _make_tree(root, classes=("mug", "bike"), per_class=3, nested=False, size=40, seed=0):
    rng = np.random.default_rng(seed)
    for c in classes:
        folder = root / ("images" if nested else "") / c
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (size, size + 7, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def test_image_folder_reads_both_layouts_with_a_shared_label_order(tmp_path):
    src = _make_tree(tmp_path / "amazon", per_class=4)
    tgt = _make_tree(tmp_path / "webcam", per_class=2, nested=True)  # Office-31: webcam/images/<class>/
    pair = BENCHMARKS.build("image_folder_pair", source=str(src), target=str(tgt), image_size=32, val_fraction=0.25)
    assert pair.num_classes == 2 and pair.source_train[0].shape[1:] == (3, 32, 32)
    assert pair.sizes()["target_test"] == 4 and pair.sizes()["source_val"] == 2
    d = DATASETS.build("image_folder", path=str(src), image_size=16, classes=["mug", "bike"])
    assert d.y_train.tolist() == [0] * 4 + [1] * 4 and d.x_train.shape == (8, 16, 16, 3)


def test_image_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="not found"):
        DATASETS.build("image_folder", path=str(tmp_path / "nope"))
    _make_tree(tmp_path / "d")
    with pytest.raises(DataError, match="cat"):
        DATASETS.build("image_folder", path=str(tmp_path / "d"), classes=["cat", "mug"])


def test_office_caltech_npz_pair(shared_data):
    pair = BENCHMARKS.build("office_caltech", data_root=str(shared_data), source="webcam", target="dslr")
    assert pair.num_classes == 10 and pair.sizes()["target_test"] == 157 and pair.sizes()["target_train"] == 157
    assert pair.source_train[0].shape[1:] == (3, 96, 96)
    with pytest.raises(DataError, match="amazon, caltech10"):
        BENCHMARKS.build("office_caltech", data_root=str(shared_data), source="clipart")


def test_resnet18_backbone_on_96px():
    model = build_classifier("resnet18", num_classes=10, in_channels=3, image_size=96)
    logits, feats = model.forward_with_features(torch.randn(2, 3, 96, 96))
    assert logits.shape == (2, 10) and feats.shape == (2, 256)
