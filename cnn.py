"""Convolutional networks. Every activation is its own `nn.ReLU` module (never F.relu,
never inplace) so that visualization and guided backpropagation can hook each one.

- `CNN`: VGG-style blocks of (conv -> batch norm -> ReLU) x convs_per_block -> pool,
  then a dense head. The Fashion-MNIST CNN and the CIFAR-10 "dense" network.
- `GAPNet`: ResNet-style stages (conv -> pool -> batch norm -> ReLU, then residual blocks),
  then global average pooling and one linear layer, so class activation maps
  (Zhou et al. 2016, Eq. 2) apply exactly.

`early_pool` (CNN) and GAPNet's stages pool straight after a stage's first convolution,
before its batch norm and ReLU (the order of Keller Jordan's airbench): max pooling commutes
with any increasing per-channel function (the ReLU, and batch norm where its scale is positive),
and the norm layers and every later convolution of the stage then run on a quarter of the
pixels, which is most of the cost of a small network on a CPU.
"""
from collections import OrderedDict

from torch import nn


def conv_bn_relu(c_in, c_out, kernel_size, batchnorm, stride=1):
    """[conv, (bn), relu] as a list of (suffix, module) pairs."""
    layers = [("conv", nn.Conv2d(c_in, c_out, kernel_size, stride, padding=kernel_size // 2,
                                 bias=not batchnorm))]
    if batchnorm:
        layers.append(("bn", nn.BatchNorm2d(c_out)))
    layers.append(("relu", nn.ReLU()))
    return layers


def make_pool(kind):
    return nn.MaxPool2d(2) if kind == "max" else nn.AvgPool2d(2)


class CNN(nn.Module):
    """VGG-style: `features` (named conv1_1, bn1_1, relu1_1, ..., pool1, ...) and `classifier`.

    adaptive_pool: start the head with nn.AdaptiveAvgPool2d to the feature map size an
    image_size image gives (as torchvision's VGG does), so smaller images (progressive
    resizing) reach the dense layers at the size they expect; at image_size it is the identity.
    """

    def __init__(self, in_channels=1, num_classes=10, image_size=28, channels=(32, 64, 128),
                 convs_per_block=1, kernel_size=3, pool="max", hidden=(256,), dropout=0.3,
                 batchnorm=True, early_pool=False, adaptive_pool=False):
        super().__init__()
        if pool not in ("max", "avg"):
            raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}")
        features, c_in, size = OrderedDict(), in_channels, image_size
        for b, c_out in enumerate(channels, 1):
            for i in range(1, convs_per_block + 1):
                for suffix, layer in conv_bn_relu(c_in, c_out, kernel_size, batchnorm):
                    if early_pool and i == 1 and suffix != "conv":  # conv1_1, pool1, bn1_1, relu1_1, conv1_2...
                        features.setdefault(f"pool{b}", make_pool(pool))
                    features[f"{suffix}{b}_{i}"] = layer
                c_in = c_out
            features.setdefault(f"pool{b}", make_pool(pool))  # default order: after the last ReLU
            size //= 2  # each pool halves H and W (floor)
        self.features = nn.Sequential(features)
        head, width = OrderedDict(), c_in * size * size
        if adaptive_pool:  # (N, C, h, w) -> (N, C, size, size)
            head["adaptive_pool"] = nn.AdaptiveAvgPool2d(size)
        head["flatten"] = nn.Flatten()
        for i, h in enumerate(hidden, 1):
            if dropout:
                head[f"drop{i}"] = nn.Dropout(dropout)
            head[f"fc{i}"] = nn.Linear(width, h)
            head[f"relu_fc{i}"] = nn.ReLU()
            width = h
        if dropout:
            head["drop_out"] = nn.Dropout(dropout)
        head["out"] = nn.Linear(width, num_classes)
        self.classifier = nn.Sequential(head)

    def forward(self, x):  # (N, C, H, W) -> (N, num_classes)
        return self.classifier(self.features(x))


class ResidualBlock(nn.Module):
    """out = relu(x + bn(conv(relu(bn(conv(x))))))  (He et al. 2016, basic block)."""

    def __init__(self, channels, batchnorm=True):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=not batchnorm)
        self.bn1 = nn.BatchNorm2d(channels) if batchnorm else nn.Identity()
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=not batchnorm)
        self.bn2 = nn.BatchNorm2d(channels) if batchnorm else nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x):
        return self.relu2(x + self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))


class GAPNet(nn.Module):
    """Optional stem conv at full resolution; then per stage s:
    conv{s} -> pool{s} (2x2 max) -> bn{s} -> relu{s} -> res{s}_1 ... res{s}_B (ResidualBlocks);
    then `gap` (global average pooling), `flatten`, `dropout` and `fc`, a single linear layer
    (N, C_last) -> (N, classes), so logits = fc(mean over H, W of features(x)) and the class
    activation map of class c is sum_k fc.weight[c, k] * features(x)[k] (Zhou et al. 2016, Eq. 2).

    blocks: residual blocks per stage, one number for every stage or one per stage.
    stem: output channels of a 3x3 conv -> bn -> relu run before the first stage (0: none).
    """

    def __init__(self, in_channels=3, num_classes=10, channels=(64, 128, 256), blocks=1,
                 dropout=0.2, batchnorm=True, stem=0):
        super().__init__()
        blocks = [blocks] * len(channels) if isinstance(blocks, int) else list(blocks)
        if len(blocks) != len(channels):
            raise ValueError(f"blocks has {len(blocks)} entries for {len(channels)} stages")
        layers, c_in = OrderedDict(), in_channels
        if stem:
            for suffix, layer in conv_bn_relu(c_in, stem, 3, batchnorm):
                layers[f"stem_{suffix}"] = layer
            c_in = stem
        for s, (c_out, n_blocks) in enumerate(zip(channels, blocks), 1):
            for suffix, layer in conv_bn_relu(c_in, c_out, 3, batchnorm):
                if suffix != "conv":
                    layers.setdefault(f"pool{s}", nn.MaxPool2d(2))  # (N, C, H/2, W/2)
                layers[f"{suffix}{s}"] = layer
            for b in range(1, n_blocks + 1):
                layers[f"res{s}_{b}"] = ResidualBlock(c_out, batchnorm)
            c_in = c_out
        self.features = nn.Sequential(layers)            # (N, C_last, H/2^S, W/2^S)
        self.gap = nn.AdaptiveAvgPool2d(1)               # (N, C_last, 1, 1)
        self.flatten = nn.Flatten()                      # (N, C_last)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.fc = nn.Linear(c_in, num_classes)           # CAM weights: fc.weight (classes, C_last)

    def forward(self, x):
        return self.fc(self.dropout(self.flatten(self.gap(self.features(x)))))
