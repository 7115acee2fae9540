"""Fast mode: the book's training with the kernels PyTorch already provides.

The book-exact mode stays the default everywhere; fast mode is opt-in and
changes rounding only, never the model, its parameters, the data order, the
dropout semantics or the initialisation:

- attention, LayerNorm and GELU use fused kernels (``GPTModel.set_fast``);
- AdamW runs as one fused (or multi-tensor) kernel instead of a loop over
  162 parameter tensors;
- forward passes run under bf16 autocast where the hardware computes bf16
  natively (CUDA with bf16 support; CPUs with AVX512-BF16 or AMX), float32
  elsewhere; on the CPU the training loss (:func:`calc_loss_batch`) reads
  the logits in chunks (float32 within each chunk, no float32 copy of the
  50,257-wide bf16 logits), and attention with dropout runs as the book's
  operations, in bf16 under autocast, instead of PyTorch's generic fallback
  (``GPTModel.set_fast``);
- on the CPU, freed memory is kept for reuse (:func:`keep_freed_memory`): each
  step allocates and frees the same gigabyte of gradients, casts and logits,
  which otherwise the system maps, zeroes and faults in anew every step;
- evaluation runs under ``torch.inference_mode`` (no autograd bookkeeping),
  each evaluation's batches joined into one forward pass;
- ``torch.compile`` is optional (it pays off only for long runs: compiling
  the 124M model takes minutes on a small CPU).

    model, optimizer, autocast = fast_training(model, dict(lr=4e-4, weight_decay=0.1))
    with autocast():
        loss = fast.calc_loss_batch(x, y, model, device)
    loss.backward()
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
from typing import NamedTuple

import torch
from torch.nn import functional as F

LOSS_CHUNK_ROWS = 32  # rows of logits per float32 chunk: 32 x 50,257 floats = 6.4 MB


def _device_type(device) -> str:
    return torch.device(device if device is not None else "cpu").type


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 matmuls natively (AVX512-BF16 or AMX).

    ``torch.backends.cpu.get_cpu_capability()`` names only the vector ISA
    PyTorch dispatches to ("AVX2", "AVX512"), which does not say whether bf16
    dot products exist, so ask the finer-grained probes; without them bf16
    autocast on the CPU emulates bf16 and is slower than float32.
    """
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def bf16_supported(device) -> bool:
    """Whether bf16 autocast speeds up training on ``device``."""
    kind = _device_type(device)
    if kind == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if kind == "cpu":
        return cpu_has_native_bf16()
    return False


def autocast_context(device, bf16: bool | None = None):
    """A zero-argument factory of the autocast context for forward passes on ``device``.

    ``bf16=None`` picks bf16 when :func:`bf16_supported`; ``False`` gives a
    no-op context (float32 throughout); ``True`` insists, and raises on
    hardware that would only emulate it.
    """
    kind = _device_type(device)
    if bf16 is None:
        bf16 = bf16_supported(device)
    elif bf16 and not bf16_supported(device):
        raise ValueError(
            f"bf16=True but device {kind!r} has no native bf16 support here; use bf16=None (auto) or False"
        )
    if not bf16:
        return contextlib.nullcontext
    return functools.partial(torch.autocast, device_type=kind, dtype=torch.bfloat16)


def _row_chunks(n: int, rows: int = LOSS_CHUNK_ROWS):
    return (slice(start, start + rows) for start in range(0, n, rows))


def _chunk_losses(logits, targets, rows: slice):
    """The rows' logits in float32, their log-sum-exp (a column) and per-token cross-entropy."""
    chunk = logits[rows].float()
    lse = torch.logsumexp(chunk, dim=1, keepdim=True)
    return chunk, lse, (lse - chunk.gather(1, targets[rows, None])).squeeze(1)


def token_losses(logits, targets):
    """Per-token cross-entropy of 2-D ``logits`` (any float dtype), in float32, one chunk of rows at a time.

    The same as ``F.cross_entropy(logits.float(), targets, reduction="none")``
    up to rounding, without a float32 copy of all the logits.
    """
    losses = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
    with torch.autograd.profiler.record_function("gptlab.fast.token_losses (cross_entropy)"):
        for rows in _row_chunks(logits.shape[0]):
            losses[rows] = _chunk_losses(logits, targets, rows)[2]
    return losses


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of bf16 logits; the gradient is computed with the loss, chunk by chunk.

    ``F.cross_entropy`` under autocast casts all logits to float32, keeps
    their log-softmax and, in the backward pass, writes three more tensors of
    the logits' size (NLL's gradient, log-softmax's, the cast back to bf16).
    Here each chunk of rows is read once in float32, and the gradient
    ``(softmax - onehot) / n`` is written once, in the logits' dtype.
    """

    @staticmethod
    def forward(ctx, logits, targets):
        n = logits.shape[0]
        losses = torch.empty(n, dtype=torch.float32, device=logits.device)
        grad = torch.empty_like(logits) if ctx.needs_input_grad[0] else None
        for rows in _row_chunks(n):
            chunk, lse, losses[rows] = _chunk_losses(logits, targets, rows)
            if grad is not None:
                probs = (chunk - lse).exp_()  # a new tensor: float32 logits would be a view
                probs.scatter_add_(1, targets[rows, None], torch.full_like(lse, -1.0))
                grad[rows] = probs.div_(n)
        ctx.save_for_backward(grad)
        return losses.mean()

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        if torch.equal(grad_output, torch.ones_like(grad_output)):  # loss.backward(): no extra pass
            return grad, None
        return grad * grad_output, None


def keep_freed_memory() -> bool:
    """Make glibc's ``malloc`` keep freed memory for reuse; ``False`` where there is no glibc.

    A training step allocates and frees the same tensors every time (gradients,
    bf16 casts of the weights, the logits), most of them above glibc's mmap
    threshold: each is mapped anew and its pages zeroed and faulted in, which
    costs more than a pass over the data. Serving them from the heap (and not
    trimming it) makes the second step's allocations free. Process-wide; the
    memory stays with the process, which keeps the peak it reached.
    """
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))


def make_adamw(params, *, lr: float, weight_decay: float, device=None, **kwargs) -> torch.optim.AdamW:
    """The book's AdamW, as one fused kernel where this PyTorch build has one for ``device``.

    The update rule is the same as the default implementation's; only the
    order of floating-point operations differs. Falls back to the multi-tensor
    (``foreach``) implementation.
    """
    params = list(params)
    kind = _device_type(device if device is not None else (params[0].device if params else "cpu"))
    if kind in ("cpu", "cuda"):
        try:
            return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True, **kwargs)
        except (RuntimeError, ValueError):  # an older build or a device without a fused kernel
            pass
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True, **kwargs)


class FastTraining(NamedTuple):
    """What :func:`fast_training` returns: use them in place of the book's model and optimizer."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    autocast: object  # zero-argument context-manager factory for forward passes


def fast_training(
    model,
    optimizer_params: dict,
    *,
    device=None,
    bf16: bool | None = None,
    compile: bool = False,
    keep_memory: bool = True,
) -> FastTraining:
    """Put ``model`` (a ``GPTModel``, already on its device) into fast mode and build its optimizer.

    ``optimizer_params`` are AdamW's keyword arguments (the book:
    ``dict(lr=0.0004, weight_decay=0.1)``). The model is modified in place
    (``compile`` uses ``nn.Module.compile``, which keeps the state-dict keys,
    so checkpoints stay interchangeable with the exact mode). Wrap forward
    passes and the loss, not ``backward()``, in ``autocast()``. On the CPU,
    ``keep_memory`` calls :func:`keep_freed_memory`.
    """
    if not hasattr(model, "set_fast"):
        raise TypeError(f"fast_training needs a gptlab GPTModel, got {type(model).__name__}")
    if device is None:
        device = next(model.parameters()).device
    model.set_fast(True)
    if compile:
        import torch._inductor.config as inductor_config

        # Compiled code would otherwise draw dropout masks from its own generator:
        # other masks than eager mode, so other losses and no bit-exact resume.
        inductor_config.fallback_random = True
        model.compile()
    optimizer = make_adamw(model.parameters(), device=device, **optimizer_params)
    if keep_memory and _device_type(device) == "cpu":
        keep_freed_memory()
    return FastTraining(model, optimizer, autocast_context(device, bf16))


EVAL_TOKENS = 4096  # tokens per evaluation forward pass: bigger matmuls, bounded logits memory


def _chunks(batches, max_tokens):
    """Consecutive batches of equal sequence shape, joined up to ``max_tokens`` tokens."""
    chunk, tokens = [], 0
    for x, y in batches:
        if chunk and (tokens + x.numel() > max_tokens or x.shape[1:] != chunk[0][0].shape[1:]):
            yield chunk
            chunk, tokens = [], 0
        chunk.append((x, y))
        tokens += x.numel()
    if chunk:
        yield chunk


def calc_loss_loader(
    data_loader, model, device, num_batches=None, autocast=contextlib.nullcontext, max_tokens=EVAL_TOKENS
):
    """The book's ``calc_loss_loader``: the mean of per-batch mean losses, computed with less work.

    The same batches are read in the same way (so the global RNG advances as
    in the book), but consecutive batches are joined into one forward pass of
    up to ``max_tokens`` tokens, without autograd bookkeeping and under
    ``autocast``; each batch's loss is then the mean over its own tokens, in
    float32 whatever the autocast dtype.
    """
    if len(data_loader) == 0:
        return float("nan")
    num_batches = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    batches = []
    for i, batch in enumerate(data_loader):  # the book's loop, which also reads batch num_batches
        if i >= num_batches:
            break
        batches.append(batch)
    total_loss = 0.0
    with torch.inference_mode():
        for chunk in _chunks(batches, max_tokens):
            inputs = torch.cat([x for x, _ in chunk]).to(device)
            targets = torch.cat([y for _, y in chunk]).to(device)
            with autocast():
                logits = model(inputs)
            losses = token_losses(logits.flatten(0, 1), targets.flatten()).view(targets.shape)
            rows = [len(x) for x, _ in chunk]
            total_loss += sum(part.mean().item() for part in losses.split(rows))
    return total_loss / num_batches


def evaluate_model(model, train_loader, val_loader, device, eval_iter, autocast=contextlib.nullcontext):
    """The book's ``evaluate_model`` in inference mode: ``(train_loss, val_loss)``."""
    model.eval()
    try:
        train_loss = calc_loss_loader(train_loader, model, device, eval_iter, autocast)
        val_loss = calc_loss_loader(val_loader, model, device, eval_iter, autocast)
    finally:
        model.train()
    return train_loss, val_loss


def make_evaluator(autocast=contextlib.nullcontext):
    """``evaluate_model`` with the book's signature, bound to ``autocast``."""
    return functools.partial(evaluate_model, autocast=autocast)


def calc_loss_batch(input_batch, target_batch, model, device):
    """The book's ``calc_loss_batch``; on the CPU, the loss of the logits in chunks.

    The book's ``F.cross_entropy(logits, targets)`` writes several tensors of
    the logits' size, and under autocast first casts all of them to float32
    (see :class:`_ChunkedCrossEntropy`). CUDA keeps PyTorch's fused loss.
    """
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    logits, targets = model(input_batch).flatten(0, 1), target_batch.flatten()
    if logits.device.type == "cpu":
        return _ChunkedCrossEntropy.apply(logits, targets)
    return F.cross_entropy(logits, targets)


def train_step(model, optimizer, input_batch, target_batch, device, autocast=contextlib.nullcontext):
    """One optimizer step as the book's loop does it; returns the loss tensor."""
    optimizer.zero_grad(set_to_none=True)
    with autocast():
        loss = calc_loss_batch(input_batch, target_batch, model, device)
    loss.backward()
    optimizer.step()
    return loss
