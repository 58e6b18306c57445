"""Conv2D layer in NumPy: forward, backward, and the shape rules they share.

A Conv2D with kernel (K_h, K_w), stride (s_h, s_w), padding (p_h, p_w) and
dilation (d_h, d_w) maps A of shape (N, C_in, H, W) to Z of shape
(N, C_out, H_out, W_out), where (as in ``torch.nn.Conv2d``)

    H_out = floor((H + 2*p_h - d_h*(K_h - 1) - 1) / s_h) + 1
    W_out = floor((W + 2*p_w - d_w*(K_w - 1) - 1) / s_w) + 1

and, with A_pad the input zero-padded by p_h rows and p_w columns on each side,

    Z[n,o,y,x] = b[o] + sum_{c,i,j} W[o,c,i,j] * A_pad[n, c, y*s_h + i*d_h, x*s_w + j*d_w].

The implementation is im2col + matrix products: every receptive field of A_pad
is copied once into a column matrix ``cols`` of shape (C_in*K_h*K_w, N*H_out*W_out),
so Z = W_mat @ cols, dL/dW = dL/dZ_mat @ cols.T and dL/dcols = W_mat.T @ dL/dZ_mat
are single BLAS matmuls. dL/dA is the col2im of dL/dcols: a scatter-add with one
strided slice per kernel offset (i, j), the only Python loop in the layer.

Dtypes: the parameters ``W`` and ``b`` are stored in ``dtype`` (float64 by
default, like the rest of MyTorch). forward/backward compute in the dtype of
the input ``A``, so Z and dL/dA keep A's dtype (float32 in, float32 out);
dL/dW and dL/db are returned in the parameters' dtype so that an optimiser
step ``W -= lr * dLdW`` keeps W's dtype.

Memory: the large intermediates (A_pad, cols, Z_cols, dL/dcols, dL/dA_pad) live in
scratch buffers that the layer keeps between calls while the input shape stays
the same. A fresh array of that size (19 MB for cols at batch 64, 32 channels,
16x16) comes from the OS page by page on first write, and glibc gives it back on
free; those page faults cost a sizable share of a forward+backward (compare
benchmarks/bench_mytorch.py with fresh arrays).
Z and dL/dA are always new arrays: the caller keeps them.
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _pair(value, name):
    """Turn an int or an (h, w) pair into an (h, w) tuple of ints."""
    pair = (value, value) if np.isscalar(value) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) for v in pair):
        raise ValueError(f"{name} must be an int or a pair of ints (h, w), got {value!r}")
    return int(pair[0]), int(pair[1])


def conv_output_size(size, kernel, stride, padding, dilation):
    """floor((size + 2*padding - dilation*(kernel - 1) - 1) / stride) + 1."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


class Conv2D:
    """2-D convolution (cross-correlation, like torch) over (N, C_in, H, W) inputs.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, padding, dilation : int or (h, w) pair
    bias : bool, default False -- learn a per-output-channel bias ``b``.
    weight_init_fn, bias_init_fn : callable(shape) -> array, optional
        Override the default initialisation, which is torch's: W and b drawn
        from U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = C_in*K_h*K_w
        (``kaiming_uniform_(W, a=sqrt(5))`` in torch reduces to this bound).
    dtype : numpy float dtype of W and b, default float64.
    rng : numpy.random.Generator for the default initialisation, optional.

    Attributes
    ----------
    W : (C_out, C_in, K_h, K_w);  b : (C_out,) or None
    dLdW, dLdb : gradients of the loss, set by ``backward``.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, bias=False, weight_init_fn=None, bias_init_fn=None,
                 dtype=np.float64, rng=None):
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be >= 1, got "
                             f"{in_channels} and {out_channels}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        self.dilation = _pair(dilation, "dilation")
        for name in ("kernel_size", "stride", "dilation"):
            if min(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}; "
                                 f"use values >= 1")
        if min(self.padding) < 0:
            raise ValueError(f"padding must be non-negative, got {self.padding}; use values >= 0")

        shape_W = (out_channels, in_channels, *self.kernel_size)
        bound = 1.0 / np.sqrt(in_channels * self.kernel_size[0] * self.kernel_size[1])
        rng = np.random.default_rng() if rng is None else rng
        init_W = weight_init_fn or (lambda shape: rng.uniform(-bound, bound, shape))
        init_b = bias_init_fn or (lambda shape: rng.uniform(-bound, bound, shape))
        self.W = np.asarray(init_W(shape_W), dtype=dtype)
        self.b = np.asarray(init_b((out_channels,)), dtype=dtype) if bias else None
        if self.W.shape != shape_W:
            raise ValueError(f"weight_init_fn returned shape {self.W.shape}, expected {shape_W}")
        if bias and self.b.shape != (out_channels,):
            raise ValueError(f"bias_init_fn returned shape {self.b.shape}, "
                             f"expected {(out_channels,)}")
        self.dLdW = np.zeros_like(self.W)
        self.dLdb = np.zeros_like(self.b) if bias else None
        self._cache = None
        self._buffers = {}  # name -> scratch array reused across calls, see the module docstring

    def __repr__(self):
        return (f"Conv2D({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"bias={self.b is not None})")

    def output_shape(self, input_shape):
        """(N, C_out, H_out, W_out) for an input of shape (N, C_in, H, W)."""
        N, _, H, W = input_shape
        H_out, W_out = (conv_output_size(size, k, s, p, d) for size, k, s, p, d in zip(
            (H, W), self.kernel_size, self.stride, self.padding, self.dilation))
        return N, self.out_channels, H_out, W_out

    def forward(self, A):
        """Z = conv(A, W) + b.  A: (N, C_in, H, W) -> Z: (N, C_out, H_out, W_out)."""
        A = np.asarray(A)
        self._check_input(A)
        N, C_out, H_out, W_out = self.output_shape(A.shape)
        # cols[(c,i,j),(n,y,x)] = A_pad[n,c,y*s_h+i*d_h,x*s_w+j*d_w]
        cols = self._im2col(A, H_out, W_out)                   # (C_in*K_h*K_w, N*H_out*W_out)
        # Z[n,o,y,x] = sum_{(c,i,j)} W_mat[o,(c,i,j)] * cols[(c,i,j),(n,y,x)] + b[o],
        # computed as Z_cols (C_out, N, H_out, W_out), then moved to (N, C_out, H_out, W_out)
        Z_cols = self._buffer("Z_cols", (C_out, N * H_out * W_out), A.dtype)
        np.matmul(self._W_mat(A.dtype), cols, out=Z_cols)
        Z_cols = Z_cols.reshape(C_out, N, H_out, W_out)
        Z = np.empty((N, C_out, H_out, W_out), dtype=A.dtype)
        if self.b is None:
            np.copyto(Z, Z_cols.transpose(1, 0, 2, 3))
        else:
            np.add(Z_cols.transpose(1, 0, 2, 3), self.b.astype(A.dtype)[:, None, None], out=Z)
        self._cache = (A.shape, A.dtype, cols)
        return Z

    def backward(self, dLdZ):
        """dLdZ: (N, C_out, H_out, W_out) -> dLdA: (N, C_in, H, W); sets dLdW and dLdb."""
        if self._cache is None:
            raise ValueError("Conv2D.backward called before forward; call forward(A) first")
        shape_A, dtype, cols = self._cache
        shape_Z = self.output_shape(shape_A)
        dLdZ = np.asarray(dLdZ, dtype=dtype)
        if dLdZ.shape != shape_Z:
            raise ValueError(f"dLdZ has shape {dLdZ.shape} but the last forward produced Z of "
                             f"shape {shape_Z}; pass the gradient of that Z")
        # dLdZ with channels first, so its columns (n,y,x) match those of cols
        N, C_out, H_out, W_out = shape_Z
        dLdZ_on = self._buffer("dLdZ_on", (C_out, N, H_out, W_out), dtype)
        np.copyto(dLdZ_on, dLdZ.transpose(1, 0, 2, 3))                # (C_out, N, H_out, W_out)
        dLdZ_mat = dLdZ_on.reshape(C_out, -1)                         # (C_out, N*H_out*W_out)
        # dL/db[o] = sum_{n,y,x} dLdZ[n,o,y,x]                           # (C_out,)
        if self.b is not None:
            self.dLdb = dLdZ_mat.sum(axis=1).astype(self.b.dtype)
        # dL/dW[o,c,i,j] = sum_{n,y,x} dLdZ[n,o,y,x] * A_pad[n,c,y*s_h+i*d_h,x*s_w+j*d_w]
        #               = (dLdZ_mat @ cols.T)[o,(c,i,j)], computed as (cols @ dLdZ_mat.T).T,
        #                 the faster BLAS call for this long inner dimension
        self.dLdW = (cols @ dLdZ_mat.T).T.reshape(self.W.shape).astype(self.W.dtype)
        # dL/dcols[(c,i,j),(n,y,x)] = sum_o W[o,c,i,j] * dLdZ[n,o,y,x]
        dLdcols = self._buffer("dLdcols", cols.shape, dtype)    # (C_in*K_h*K_w, N*H_out*W_out)
        np.matmul(self._W_mat(dtype).T, dLdZ_mat, out=dLdcols)
        # dL/dA[n,c,h,w] = sum of dL/dcols[(c,i,j),(n,y,x)] over h+p_h = y*s_h+i*d_h,
        #                  w+p_w = x*s_w+j*d_w                             # (N, C_in, H, W)
        return self._col2im(dLdcols, shape_A, shape_Z[2:])

    def _W_mat(self, dtype):
        """W as a (C_out, C_in*K_h*K_w) matrix in the compute dtype, rows matching cols."""
        return self.W.reshape(self.out_channels, -1).astype(dtype, copy=False)

    def _buffer(self, name, shape, dtype, zeros=False):
        """The scratch array `name`, reused while its shape and dtype stay the same. With
        zeros=True a new one starts at zero (a reused one keeps what the caller left in it)."""
        buf = self._buffers.get(name)
        if buf is None or buf.shape != tuple(shape) or buf.dtype != dtype:
            buf = self._buffers[name] = (np.zeros if zeros else np.empty)(shape, dtype)
        return buf

    def _check_input(self, A):
        if A.ndim != 4:
            raise ValueError(f"Conv2D expects A of shape (N, C_in, H, W), got shape {A.shape}; "
                             f"add a batch axis with A[None] for a single image")
        if A.shape[1] != self.in_channels:
            raise ValueError(f"A has {A.shape[1]} channels (shape {A.shape}) but this Conv2D has "
                             f"in_channels={self.in_channels}; fix the input or the layer")
        if not np.issubdtype(A.dtype, np.floating):
            raise ValueError(f"A has dtype {A.dtype}; Conv2D needs floating-point input, "
                             f"cast it with A.astype(np.float32) or np.float64")
        _, _, H_out, W_out = self.output_shape(A.shape)
        if H_out < 1 or W_out < 1:
            K_h, K_w = self.kernel_size
            raise ValueError(
                f"output size would be {H_out}x{W_out} for input {A.shape[2]}x{A.shape[3]} with "
                f"kernel {K_h}x{K_w}, stride {self.stride}, padding {self.padding}, dilation "
                f"{self.dilation}; use a larger input, more padding or a smaller kernel")

    def _im2col(self, A, H_out, W_out):
        """Receptive fields of A_pad as columns: (C_in*K_h*K_w, N*H_out*W_out).

        cols[(c,i,j), (n,y,x)] = A_pad[n, c, y*s_h + i*d_h, x*s_w + j*d_w]
        """
        (K_h, K_w), (s_h, s_w), (d_h, d_w) = self.kernel_size, self.stride, self.dilation
        A_pad = self._pad(A)                                         # (N, C_in, H_pad, W_pad)
        span_h, span_w = d_h * (K_h - 1) + 1, d_w * (K_w - 1) + 1     # dilated kernel extent
        windows = sliding_window_view(A_pad, (span_h, span_w), axis=(2, 3))
        windows = windows[:, :, ::s_h, ::s_w, ::d_h, ::d_w]  # (N, C_in, H_out, W_out, K_h, K_w)
        # one contiguous copy, in the (c,i,j) x (n,y,x) order the matmul reads
        N, C_in, K_h, K_w = A.shape[0], A.shape[1], *self.kernel_size
        cols = self._buffer("cols", (C_in * K_h * K_w, N * H_out * W_out), A.dtype)
        np.copyto(cols.reshape(C_in, K_h, K_w, N, H_out, W_out), windows.transpose(1, 4, 5, 0, 2, 3))
        return cols

    def _pad(self, A):
        p_h, p_w = self.padding
        if p_h == p_w == 0:
            return A
        N, C, H, W = A.shape
        # the border is never written, so a reused buffer keeps its zeros
        A_pad = self._buffer("A_pad", (N, C, H + 2 * p_h, W + 2 * p_w), A.dtype, zeros=True)
        A_pad[:, :, p_h:p_h + H, p_w:p_w + W] = A
        return A_pad

    def _col2im(self, dLdcols, shape_A, shape_out):
        """Adjoint of _im2col: add each column entry back onto the input pixel it was copied from.

        dL/dA_pad[n,c,y*s_h+i*d_h, x*s_w+j*d_w] += dL/dcols[(c,i,j),(n,y,x)], one strided
        slice add per kernel offset (i, j); then the padding border is cropped off.
        """
        (K_h, K_w), (s_h, s_w), (d_h, d_w) = self.kernel_size, self.stride, self.dilation
        (p_h, p_w), (N, C_in, H, W), (H_out, W_out) = self.padding, shape_A, shape_out
        dLdcols = dLdcols.reshape(C_in, K_h, K_w, N, H_out, W_out)
        dLdA_pad = self._buffer("dLdA_pad", (N, C_in, H + 2 * p_h, W + 2 * p_w), dLdcols.dtype)
        dLdA_pad.fill(0)
        dLdA_pad_cn = dLdA_pad.transpose(1, 0, 2, 3)                 # (C_in, N, H_pad, W_pad) view
        for i in range(K_h):
            rows = slice(i * d_h, i * d_h + s_h * (H_out - 1) + 1, s_h)
            for j in range(K_w):
                cols = slice(j * d_w, j * d_w + s_w * (W_out - 1) + 1, s_w)
                dLdA_pad_cn[:, :, rows, cols] += dLdcols[:, i, j]     # (C_in, N, H_out, W_out)
        return dLdA_pad[:, :, p_h:p_h + H, p_w:p_w + W].copy()  # a new array: the buffer is reused
