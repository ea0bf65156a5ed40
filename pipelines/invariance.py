"""Batch invariance: a sample's result must not depend on which other jobs share its batch.

A batched pipeline call runs the same operations as one call per job, yet BLAS picks its matrix
kernel (and with it the order in which products are summed) by the number of rows: on the CPU a
linear layer fed 2 rows and one fed 8 identical-looking rows round differently in the last bit,
and diffusion amplifies that into pixels that differ by 1/255. Measured on the SD UNet, VAE and
CLIP text encoder: attention and layer norm give each sample the same bits at any batch size, and
group norm does on contiguous inputs (a channels-last input, as an attention block's output can
be, takes a kernel whose result depends on the batch: it is made contiguous first);
``nn.Linear`` does not (small products take another kernel), and neither does ``nn.Conv2d``:
PyTorch runs some float32 CPU convolutions with its own kernels instead of oneDNN's, chosen by
batch size, kernel size and thread count (a batch-1 3x3 convolution of a small input, a 1x1
convolution of fewer than 16 samples on one thread), while oneDNN's result per sample does not
depend on the batch (checked at batches 1-8, 1 and 2 threads) as long as the input's memory
format does not (PyTorch propagates channels-last strides differently for a single sample). So
with batching on, every float32 convolution on the CPU calls oneDNN itself
(``torch.mkldnn_convolution``) on an input in the layer's own memory format, and
every ``nn.Linear`` of the pipeline multiplies one sample at a time: one batched matrix product
(``baddbmm``, the weight broadcast over the batch) whose matrices are the samples of a 3-D or
higher input, or the rows of a 2-D input of at most ``ROWS_2D`` rows (time and condition
embeddings). Each matrix then has the same shape whether the job ran alone or with others, and
the same bits come out (checked against single products and plain ``F.linear`` of one sample;
about as fast as one large product, unlike a Python loop over samples). Larger 2-D inputs
(rare: a model that flattens batch and tokens itself) keep one product, so such a model is not
covered.

Why our own: batch-invariant kernels exist for CUDA LLM inference (Thinking Machines'
``batch_invariant_ops``), not for CPU or for diffusers pipelines; swapping the class of each
``nn.Linear`` / ``nn.Conv2d`` / ``nn.GroupNorm`` instance (a subclass with the same parameters) keeps state dicts,
peft LoRA wrapping and ``isinstance`` checks working and is undone by swapping back. Not covered:
other convolution kinds (1-D, 3-D, transposed), other dtypes and devices (cuBLAS and cuDNN pick
kernels by batch too; nothing here is checked on a GPU).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

ROWS_2D = 64
"""2-D inputs up to this many rows are multiplied row by row (embeddings); larger ones at once."""


class PerSampleLinear(torch.nn.Linear):
    """``nn.Linear`` whose product is computed one sample at a time (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim < 2 or (x.ndim == 2 and x.shape[0] > ROWS_2D):
            return F.linear(x, self.weight, self.bias)
        samples = x.reshape(x.shape[0], -1, x.shape[-1])  # (B, M, in): one matrix per sample or row
        weight = self.weight.t().unsqueeze(0).expand(samples.shape[0], -1, -1)
        if self.bias is None:
            out = torch.bmm(samples, weight)
        else:
            out = torch.baddbmm(self.bias.view(1, 1, -1), samples, weight)
        return out.reshape(*x.shape[:-1], out.shape[-1])


class OneDNNConv2d(torch.nn.Conv2d):
    """``nn.Conv2d`` that runs every float32 CPU input through oneDNN, whatever its batch size."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if (input.ndim != 4 or input.device.type != "cpu" or input.dtype != torch.float32
                or isinstance(self.padding, str) or not torch.backends.mkldnn.is_available()
                or not torch.backends.mkldnn.enabled):
            return super()._conv_forward(input, weight, bias)
        # the memory format is the layer's choice (the channels_last lever), not the batch's: PyTorch
        # propagates formats differently for one sample, and oneDNN's kernel depends on the format
        layout = torch.channels_last if _channels_last(weight) else torch.contiguous_format
        input = input.contiguous(memory_format=layout)
        padding = self.padding
        if self.padding_mode != "zeros":
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = (0, 0)
        return torch.mkldnn_convolution(input, weight, bias, padding, self.stride, self.dilation, self.groups)


def _channels_last(weight: torch.Tensor) -> bool:
    return weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()


class ContiguousGroupNorm(torch.nn.GroupNorm):
    """``nn.GroupNorm`` on a contiguous (channels-first) copy of a channels-last input."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return super().forward(input.contiguous())


SWAPS: dict[type[torch.nn.Module], type[torch.nn.Module]] = {
    torch.nn.Linear: PerSampleLinear, torch.nn.Conv2d: OneDNNConv2d, torch.nn.GroupNorm: ContiguousGroupNorm}


def _components(pipe: Any) -> list[torch.nn.Module]:
    parts = getattr(pipe, "components", None) or {}
    return [m for m in parts.values() if isinstance(m, torch.nn.Module)]


def _swap(pipe: Any, classes: dict[type[torch.nn.Module], type[torch.nn.Module]]) -> int:
    """Give every module of ``pipe`` whose exact class is a key of ``classes`` the mapped class."""
    count = 0
    for component in _components(pipe):
        for module in component.modules():
            new = classes.get(type(module))
            if new is not None:
                module.__class__ = new
                count += 1
    return count


def make_batch_invariant(pipe: Any) -> int:
    """Make every ``nn.Linear``, ``nn.Conv2d`` and ``nn.GroupNorm`` of ``pipe``'s modules
    batch-invariant; returns how many."""
    return _swap(pipe, SWAPS)


def undo_batch_invariant(pipe: Any) -> None:
    """Give every swapped layer its plain class back."""
    _swap(pipe, {swap: base for base, swap in SWAPS.items()})


def is_batch_invariant(pipe: Any) -> bool:
    swapped = tuple(SWAPS.values())
    return any(type(m) in swapped for c in _components(pipe) for m in c.modules())
