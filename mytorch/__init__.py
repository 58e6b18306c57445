"""mytorch: a small NumPy-only deep-learning package in the style of CMU 11-785 MyTorch.

Layers cache what they need in ``forward(A)``; ``backward(dLdZ)`` stores the
parameter gradients on the layer and returns ``dLdA``. Check the Conv2D layer
against torch with ``python -m mytorch.check``.
"""
from mytorch.conv import Conv2D, conv_output_size

__all__ = ["Conv2D", "conv_output_size"]
