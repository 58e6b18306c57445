"""The feed-forward network for Fashion-MNIST: flatten, then `len(hidden)` blocks of
Linear -> BatchNorm -> ReLU -> Dropout, then a linear classifier."""
from collections import OrderedDict

from torch import nn


class FFN(nn.Module):
    def __init__(self, in_shape=(1, 28, 28), num_classes=10, hidden=(1024, 1024),
                 dropout=0.3, batchnorm=True):
        super().__init__()
        layers = OrderedDict(flatten=nn.Flatten())  # (N, C, H, W) -> (N, C*H*W)
        width = in_shape[0] * in_shape[1] * in_shape[2]
        for i, h in enumerate(hidden, 1):
            layers[f"fc{i}"] = nn.Linear(width, h, bias=not batchnorm)
            if batchnorm:
                layers[f"bn{i}"] = nn.BatchNorm1d(h)
            layers[f"relu{i}"] = nn.ReLU()
            if dropout:
                layers[f"drop{i}"] = nn.Dropout(dropout)
            width = h
        layers["out"] = nn.Linear(width, num_classes)
        self.layers = nn.Sequential(layers)

    def forward(self, x):  # (N, C, H, W) -> (N, num_classes) logits
        return self.layers(x)
