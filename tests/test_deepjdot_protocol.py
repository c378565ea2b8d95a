"""The pieces of DeepJDOT's paper protocol: class-balanced source batches, padded and per-split standardised
digits, and its six-conv network."""
from __future__ import annotations

import pytest
import torch

from dacl.benchmarks.domain_pair import load_domain_pair
from dacl.data.stream import ClassBalancedStream
from dacl.errors import ConfigError


def test_class_balanced_batches_hold_the_same_count_of_every_class_and_resume_exactly():
    labels = torch.arange(10).repeat_interleave(torch.arange(20, 30))  # unbalanced: 20..29 examples per class
    stream = ClassBalancedStream(labels, 50, seed=3, device="cpu")
    batches = [stream.next_indices() for _ in range(4)]
    for idx in batches:
        assert torch.bincount(labels[idx], minlength=10).tolist() == [5] * 10
        assert len(set(idx.tolist())) == 50  # without replacement within a batch
    assert not torch.equal(batches[0], batches[1])  # redrawn every step
    again = ClassBalancedStream(labels, 50, seed=3, device="cpu")
    again.next_indices()
    again.next_indices()
    twin = ClassBalancedStream(labels, 50, seed=0, device="cpu")
    twin.load_state_dict(again.state_dict())
    assert torch.equal(twin.next_indices(), batches[2]) and torch.equal(twin.cpu_copy().next_indices(), batches[3])
    with pytest.raises(ConfigError, match="rarest class has 20"):
        ClassBalancedStream(labels, 300, seed=0, device="cpu")


def test_padding_and_per_split_standardisation():
    pair = load_domain_pair("uci_digits", "uci_digits_shifted", image_size=28, channels=1, mean=[0.0], std=[1.0],
                            fit="pad", standardize="per_split")
    x = pair.target_test[0]
    assert x.shape[1:] == (1, 28, 28)
    border = torch.cat([x[:, :, :10, :].flatten(), x[:, :, :, :10].flatten()])
    assert torch.allclose(border, border[0].expand_as(border))  # zeros around the 8 x 8 digit, one value after scaling
    for split in (pair.source_train[0], pair.source_test[0], pair.target_train_x, x):
        assert split.mean().item() == pytest.approx(0.0, abs=1e-4) and split.std().item() == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ConfigError, match="benchmark.fit"):
        load_domain_pair("uci_digits", "uci_digits", image_size=28, channels=1, mean=[0.0], std=[1.0], fit="tile")


def test_crop_keeps_the_pixel_scale_where_resize_shrinks_it():
    """fit=crop takes the centre of a larger image and pads a smaller one; the pixels it keeps are the stored ones."""
    cropped = load_domain_pair("uci_digits", "uci_digits", image_size=6, channels=1, mean=[0.0], std=[1.0], fit="crop")
    resized = load_domain_pair("uci_digits", "uci_digits", image_size=6, channels=1, mean=[0.0], std=[1.0])
    from dacl.registry import DATASETS
    import dacl.data  # noqa: F401

    raw = torch.as_tensor(DATASETS.get("uci_digits")(data_root=None).x_test, dtype=torch.float32)[:, 1:7, 1:7] / 255
    assert torch.allclose(cropped.target_test[0][:, 0], raw)
    assert not torch.allclose(resized.target_test[0][:, 0], raw)
    padded = load_domain_pair("uci_digits", "uci_digits", image_size=12, channels=1, mean=[0.0], std=[1.0], fit="crop")
    assert padded.target_test[0].shape[-1] == 12 and torch.count_nonzero(padded.target_test[0][:, :, :2]) == 0


def test_deepjdot_network_gives_128_sigmoid_features_at_28_px():
    from dacl.models.classifier import build_classifier

    model = build_classifier("deepjdot_digits", 10, 1, 28, bottleneck_dim=0)
    feats = model.features(torch.randn(2, 1, 28, 28))
    assert feats.shape == (2, 128) and bool(((feats > 0) & (feats < 1)).all())
    assert model.backbone.fc[0].in_features == 25 * 25 * 128
