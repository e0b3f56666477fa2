"""torch tensors as numpy arrays, without importing torch.

A handler that returns tensors (on any device, with or without grad) should not have to
convert them: the codec recognises a tensor by its type's module, so torch is never imported
here; a tensor exists only if the caller already imported torch.
"""

from __future__ import annotations

from typing import Any

# numpy has no bfloat16: such tensors travel as float32 (exact: bfloat16 is float32 with a
# shorter mantissa). Other dtypes numpy lacks (float8, quantised) fail with their name.
_WIDENED = frozenset({"torch.bfloat16"})


def is_tensor(obj: Any) -> bool:
    """A torch tensor (or subclass such as ``nn.Parameter``), told apart without torch."""
    module = type(obj).__module__
    return (module == "torch" or module.startswith("torch.")) and hasattr(obj, "numpy")


def to_numpy(tensor: Any) -> Any:
    """The tensor's values as a numpy array: off the autograd graph, on the CPU."""
    plain = tensor.detach()
    if str(plain.dtype) in _WIDENED:
        plain = plain.float()
    try:
        return plain.cpu().numpy()
    except (TypeError, RuntimeError) as exc:
        raise TypeError(f"cannot convert a torch tensor of dtype {plain.dtype}: {exc}") from None
