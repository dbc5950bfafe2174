"""Convolution lowered per backend: XLA's convolution on accelerators, a patch matmul on XLA:CPU.

XLA:CPU runs a convolution through Eigen's spatial convolution, which for an LDM's layer shapes is
slower than multiplying the matrix of input patches by the kernel (im2col), a GEMM at the CPU's
peak: at SD v1 width a 3x3 convolution over the 2x2 level is ~30x slower (XLA reverses the kernel
on every call), over 4x4-8x8 inputs 1.5-2.5x, and its gradients are ~2x slower at every size
(figures in experiments/README.md). `conv_general_dilated` has lax's signature (it is given to
`nn.Conv`) and, on the CPU only, computes 2-D convolutions from patches where that is faster and the
patch matrix fits a memory budget. Narrow convolutions keep XLA's: there the patch program costs more
compile time (2-2.5x for a 32-channel UNet) than it saves. GPU and TPU keep XLA's convolution (cuDNN,
the TPU emitter).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# Kernels with fewer weights (3x3 from 128 to 128 channels) keep XLA's convolution.
MATMUL_MIN_KERNEL_SIZE = 3 * 3 * 128 * 128
# Above this many output pixels XLA:CPU's forward convolution is as fast as the patch matmul.
MATMUL_FORWARD_MAX_PIXELS = 32 * 32
# The patch matrix (kernel taps x the input) may take at most this much memory per call.
PATCH_BUDGET_BYTES = 512 * 2**20


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None):
    """`lax.conv_general_dilated`, by patch matmuls on XLA:CPU for plain NHWC/HWIO 2-D convolutions."""
    xla = functools.partial(lax.conv_general_dilated, window_strides=window_strides, padding=padding,
                            lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
                            dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
                            batch_group_count=batch_group_count, precision=precision,
                            preferred_element_type=preferred_element_type)
    plain = (lhs.ndim == 4 and feature_group_count == 1 and batch_group_count == 1
             and preferred_element_type is None
             and all(d == 1 for d in (lhs_dilation or ()) + (rhs_dilation or ()))
             and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
             == lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC")))
    if not plain or np.prod(rhs.shape) < MATMUL_MIN_KERNEL_SIZE:
        return xla(lhs, rhs)
    strides = tuple(window_strides)
    pads = tuple(map(tuple, lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
                     if isinstance(padding, str) else padding))
    return lax.platform_dependent(lhs, rhs, default=xla,
                                  cpu=lambda x, kernel: _cpu_conv(x, kernel, strides, pads, precision))


def patches(x, kernel_hw, strides, pads):
    """(B, H, W, C) -> (B, H', W', kh * kw * C): each output pixel's input window, taps major."""
    x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    (kh, kw), (sh, sw) = kernel_hw, strides
    out_h, out_w = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    taps = [lax.slice(x, (0, i, j, 0), (x.shape[0], i + sh * (out_h - 1) + 1, j + sw * (out_w - 1) + 1,
                                         x.shape[3]), (1, sh, sw, 1))
            for i in range(kh) for j in range(kw)]
    return taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=-1)


def _plan(x_shape, kernel_shape, strides, pads, itemsize) -> tuple[bool, bool]:
    """(forward by matmul, gradients by matmul) for one convolution's static shapes."""
    padded = [size + lo + hi for size, (lo, hi) in zip(x_shape[1:3], pads)]
    out_pixels = int(np.prod([(p - k) // s + 1 for p, k, s in zip(padded, kernel_shape[:2], strides)]))
    fits = x_shape[0] * out_pixels * int(np.prod(kernel_shape[:3])) * itemsize <= PATCH_BUDGET_BYTES
    return fits and out_pixels <= MATMUL_FORWARD_MAX_PIXELS, fits


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _cpu_conv(x, kernel, strides, pads, precision):
    return _cpu_conv_forward(x, kernel, strides, pads, precision)[0]


def _xla_conv(x, kernel, strides, pads, precision):
    return lax.conv_general_dilated(x, kernel, strides, pads, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    precision=precision)


def _cpu_conv_forward(x, kernel, strides, pads, precision):
    forward_by_matmul, _ = _plan(x.shape, kernel.shape, strides, pads, x.dtype.itemsize)
    if forward_by_matmul:
        y = jnp.matmul(patches(x, kernel.shape[:2], strides, pads), kernel.reshape(-1, kernel.shape[-1]),
                       precision=precision)
    else:
        y = _xla_conv(x, kernel, strides, pads, precision)
    return y, (x, kernel)  # the patches are recomputed in the backward pass, not kept


def _cpu_conv_backward(strides, pads, precision, residuals, grad):
    x, kernel = residuals
    _, backward_by_matmul = _plan(x.shape, kernel.shape, strides, pads, x.dtype.itemsize)
    if not backward_by_matmul:
        return jax.vjp(lambda x, k: _xla_conv(x, k, strides, pads, precision), x, kernel)[1](grad)
    cols, patches_transpose = jax.vjp(lambda x: patches(x, kernel.shape[:2], strides, pads), x)
    flat_cols, flat_grad = cols.reshape(-1, cols.shape[-1]), grad.reshape(-1, grad.shape[-1])
    d_kernel = jnp.matmul(flat_cols.T, flat_grad, precision=precision).reshape(kernel.shape)
    d_cols = jnp.matmul(grad, kernel.reshape(-1, kernel.shape[-1]).T, precision=precision)
    return patches_transpose(d_cols)[0], d_kernel.astype(kernel.dtype)


_cpu_conv.defvjp(_cpu_conv_forward, _cpu_conv_backward)
