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
every ``nn.Linear`` of the pipeline multiplies one sample at a time: one ``addmm`` per sample of
a 3-D or higher input, or per row of a 2-D input of at most ``ROWS_2D`` rows (time and condition
embeddings). Each product then has the same shape, and goes to the same BLAS kernel, whether the
job ran alone or with others. A batched product (``baddbmm`` over the samples) is not enough:
MKL 2024.2 on an AMD EPYC (Zen 3) runs a batch of one as a plain matrix product, whose bits
differ from the same sample inside a batch of eight (for 5 or 6 tokens a sample), while one
product per sample is identical on every CPU we ran (AMD EPYC Zen 3; Intel Xeon before), and
costs about as much as one large product for the batch sizes a worker uses (1-8).
``self_check()`` probes this on the machine it runs on; a worker that finds it broken says so and
stops claiming bit-identical batches. Larger 2-D inputs
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
        weight = self.weight.t()
        # the same (M, in) x (in, out) product for a sample whatever its batch: (B, M, out)
        if self.bias is None:
            out = torch.stack([torch.mm(sample, weight) for sample in samples])
        else:
            out = torch.stack([torch.addmm(self.bias, sample, weight) for sample in samples])
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


def self_check(seed: int = 0) -> list[str]:
    """Probe, on this CPU, that each swapped layer gives a sample the same bits alone as in a
    batch of up to 8; returns the layers that do not (empty when batching is bit-identical here).
    A few milliseconds; a batching worker runs it once when it starts."""
    gen = torch.Generator().manual_seed(seed)
    failed = []
    with torch.no_grad():
        linear: torch.nn.Module = torch.nn.Linear(32, 48)
        conv: torch.nn.Module = torch.nn.Conv2d(8, 8, 3, padding=1)
        conv1: torch.nn.Module = torch.nn.Conv2d(8, 16, 1)
        norm: torch.nn.Module = torch.nn.GroupNorm(4, 8)
        for module in (linear, conv, conv1, norm):
            for p in module.parameters():
                p.copy_(torch.randn(p.shape, generator=gen))
            module.__class__ = SWAPS[type(module)]
        probes: list[tuple[str, torch.nn.Module, torch.Tensor]] = [
            *[("linear", linear, torch.randn(8, *tokens, 32, generator=gen))
              for tokens in ((), (1,), (5,), (6,), (77,))],
            ("conv3x3", conv, torch.randn(8, 8, 8, 8, generator=gen)),
            ("conv1x1", conv1, torch.randn(8, 8, 8, 8, generator=gen)),
            ("group_norm", norm, torch.randn(8, 8, 8, 8, generator=gen).contiguous(memory_format=torch.channels_last)),
        ]
        for name, module, x in probes:
            full = module(x)
            if not all(torch.equal(module(x[:k]), full[:k]) for k in (1, 2, 3, 5)) and name not in failed:
                failed.append(name)
    return failed


def is_batch_invariant(pipe: Any) -> bool:
    swapped = tuple(SWAPS.values())
    return any(type(m) in swapped for c in _components(pipe) for m in c.modules())
