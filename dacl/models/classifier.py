"""Backbone + bottleneck + linear head, and the domain discriminator DA methods attach."""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from dacl.errors import ConfigError
from dacl.registry import BACKBONES


class Classifier(nn.Module):
    """``features(x)`` gives the bottleneck features DA losses align; ``forward(x)`` gives logits."""

    def __init__(self, backbone: nn.Module, num_classes: int, bottleneck_dim: int = 256,
                 bottleneck_relu: bool = True, head_weight_norm: bool = False, bottleneck_depth: int = 1,
                 bottleneck_norm: bool = True) -> None:
        """``bottleneck_relu=False`` and ``head_weight_norm=True`` give SHOT's source architecture (Liang et al.
        2020: Linear-BN bottleneck, weight-normalised linear head); ``bottleneck_depth=2, bottleneck_norm=False``
        the DANN paper's label predictor (two 100-unit Linear-ReLU layers, no BatchNorm)."""
        super().__init__()
        self.backbone = backbone
        in_dim = int(backbone.out_features)  # type: ignore[arg-type]
        if bottleneck_dim > 0:
            layers: list[nn.Module] = []
            for i in range(bottleneck_depth):
                layers.append(nn.Linear(in_dim if i == 0 else bottleneck_dim, bottleneck_dim))
                layers += [nn.BatchNorm1d(bottleneck_dim)] if bottleneck_norm else []
                layers += [nn.ReLU()] if bottleneck_relu else []
            self.bottleneck: nn.Module = nn.Sequential(*layers)
            self.feature_dim = bottleneck_dim
        else:
            self.bottleneck = nn.Identity()
            self.feature_dim = in_dim
        head = nn.Linear(self.feature_dim, num_classes)
        self.head = nn.utils.parametrizations.weight_norm(head) if head_weight_norm else head
        self.num_classes = num_classes

    def features(self, x: Tensor) -> Tensor:
        return self.bottleneck(self.backbone(x))

    def forward_with_features(self, x: Tensor, layer: str = "bottleneck") -> tuple[Tensor, Tensor]:
        """Logits and the features of ``layer``: the bottleneck's (what DA losses align by default) or the
        backbone's (the DANN paper's discriminator reads the flattened conv features)."""
        if layer == "backbone":
            z = self.backbone(x)
            return self.head(self.bottleneck(z)), z
        f = self.features(x)
        return self.head(f), f

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


WEIGHT_INITS = ("default", "truncated_normal")


def init_weights(module: nn.Module, scheme: str = "default") -> nn.Module:
    """``default`` keeps PyTorch's initialisation; ``truncated_normal`` is TensorFlow tutorials' (and tf-dann's)
    weight_variable / bias_variable: every Conv/Linear weight ~ N(0, 0.1) truncated at 2 std, every bias 0.1."""
    if scheme not in WEIGHT_INITS:
        raise ConfigError(f"weight_init must be one of {', '.join(WEIGHT_INITS)}, got '{scheme}'")
    if scheme == "truncated_normal":
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.1, a=-0.2, b=0.2)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0.1)
    return module


def build_classifier(backbone: str, num_classes: int, in_channels: int, image_size: int,
                     bottleneck_dim: int = 256, bottleneck_relu: bool = True, head_weight_norm: bool = False,
                     bottleneck_depth: int = 1, bottleneck_norm: bool = True, weight_init: str = "default",
                     **backbone_kwargs: Any) -> Classifier:
    net = BACKBONES.get(backbone)(in_channels=in_channels, image_size=image_size, **backbone_kwargs)
    return init_weights(Classifier(net, num_classes=num_classes, bottleneck_dim=bottleneck_dim,
                                   bottleneck_relu=bottleneck_relu, head_weight_norm=head_weight_norm,
                                   bottleneck_depth=bottleneck_depth, bottleneck_norm=bottleneck_norm), weight_init)


class DomainDiscriminator(nn.Module):
    """MLP domain classifier (``layers`` x Linear-BN-ReLU -> 1 logit; TLlib's is 2 x 1024 with BN, the DANN paper's
    digits one 1 x 100 without). Outputs logits: use BCE-with-logits (AMP safe)."""

    def __init__(self, in_features: int, hidden: int = 1024, batch_norm: bool = True, layers: int = 2,
                 dropout: float = 0.0) -> None:
        super().__init__()

        def block(i: int, o: int) -> list[nn.Module]:
            norm: nn.Module = nn.BatchNorm1d(o) if batch_norm else nn.Identity()
            return [nn.Linear(i, o), norm, nn.ReLU(), *([nn.Dropout(dropout)] if dropout else [])]

        blocks = [m for k in range(layers) for m in block(in_features if k == 0 else hidden, hidden)]
        self.net = nn.Sequential(*blocks, nn.Linear(hidden, 1))

    def forward(self, f: Tensor) -> Tensor:
        return self.net(f).squeeze(-1)
