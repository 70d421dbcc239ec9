"""A ResNet-50-shaped network in PyTorch (random weights), for timing only.

The standard bottleneck layout (stages of 3, 4, 6 and 3 blocks, widths 64 to 512, expansion 4,
stride on the 3x3 convolution), 1000 classes. Every ReLU is its own module, so forward hooks and
the exported ONNX node names (``/layer4/layer4.2/relu3/Relu``) point at one tensor each.
Needs torch; nothing in ``pfv_onnx`` imports this file.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu3 = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu1(self.bn1(self.conv1(x)))
        y = self.relu2(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu3(y + self.shortcut(x))


class ResNet50(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        stages = []
        in_channels = 64
        for i, (width, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3))):
            layers = []
            for b in range(blocks):
                stride = 2 if (i > 0 and b == 0) else 1
                layers.append(Bottleneck(in_channels, width, stride))
                in_channels = width * Bottleneck.expansion
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def build(seed: int = 0) -> ResNet50:
    """A ResNet-50 in eval mode with seeded random weights and activations of a sane scale.

    Convolutions get He-normal weights; the last batch norm of each residual branch is scaled
    down so the activations stay finite and of order one through the 16 blocks.
    """
    torch.manual_seed(seed)
    model = ResNet50()
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, Bottleneck):
            nn.init.constant_(m.bn3.weight, 0.2)
    return model.eval()


def export(model: nn.Module, path: str | Path, size: int = 224) -> Path:
    """ONNX export (TorchScript exporter, opset 17) with dynamic batch, height and width."""
    path = Path(path)
    dummy = torch.zeros(1, 3, size, size)
    with torch.no_grad():
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}},
        )
    return path
