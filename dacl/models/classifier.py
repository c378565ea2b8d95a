"""Backbone + bottleneck + linear head, and the domain discriminator DA methods attach."""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from dacl.registry import BACKBONES


class Classifier(nn.Module):
    """``features(x)`` gives the bottleneck features DA losses align; ``forward(x)`` gives logits."""

    def __init__(self, backbone: nn.Module, num_classes: int, bottleneck_dim: int = 256,
                 bottleneck_relu: bool = True, head_weight_norm: bool = False) -> None:
        """``bottleneck_relu=False`` and ``head_weight_norm=True`` give SHOT's source architecture (Liang et al.
        2020: Linear-BN bottleneck, weight-normalised linear head)."""
        super().__init__()
        self.backbone = backbone
        in_dim = int(backbone.out_features)  # type: ignore[arg-type]
        if bottleneck_dim > 0:
            layers = [nn.Linear(in_dim, bottleneck_dim), nn.BatchNorm1d(bottleneck_dim)]
            self.bottleneck: nn.Module = nn.Sequential(*layers, *([nn.ReLU()] if bottleneck_relu else []))
            self.feature_dim = bottleneck_dim
        else:
            self.bottleneck = nn.Identity()
            self.feature_dim = in_dim
        head = nn.Linear(self.feature_dim, num_classes)
        self.head = nn.utils.parametrizations.weight_norm(head) if head_weight_norm else head
        self.num_classes = num_classes

    def features(self, x: Tensor) -> Tensor:
        return self.bottleneck(self.backbone(x))

    def forward_with_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f = self.features(x)
        return self.head(f), f

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def build_classifier(backbone: str, num_classes: int, in_channels: int, image_size: int,
                     bottleneck_dim: int = 256, bottleneck_relu: bool = True, head_weight_norm: bool = False,
                     **backbone_kwargs: Any) -> Classifier:
    net = BACKBONES.build(backbone, in_channels=in_channels, image_size=image_size, **backbone_kwargs)
    return Classifier(net, num_classes=num_classes, bottleneck_dim=bottleneck_dim, bottleneck_relu=bottleneck_relu,
                      head_weight_norm=head_weight_norm)


class DomainDiscriminator(nn.Module):
    """MLP domain classifier (Linear-BN-ReLU x2 -> 1 logit). Outputs logits: use BCE-with-logits (AMP safe)."""

    def __init__(self, in_features: int, hidden: int = 1024, batch_norm: bool = True) -> None:
        super().__init__()

        def block(i: int, o: int) -> list[nn.Module]:
            norm: nn.Module = nn.BatchNorm1d(o) if batch_norm else nn.Identity()
            return [nn.Linear(i, o), norm, nn.ReLU()]

        self.net = nn.Sequential(*block(in_features, hidden), *block(hidden, hidden), nn.Linear(hidden, 1))

    def forward(self, f: Tensor) -> Tensor:
        return self.net(f).squeeze(-1)
