"""The code that runs inside the sandbox, next to an untrusted ``train.py`` (untrusted side).

Nothing here is trusted by the harness: once ``train.py`` is imported it can replace any of these
functions, so everything a worker sends is checked by the harness (``autoresearch.trainer.harness``)
as if a stranger had written it. The package imports only the standard library and torch, with
relative imports, because inside the sandbox it is mounted alone at ``/ar/worker`` (the installed
``autoresearch`` package, with the track data, is not visible there).

- :mod:`.wire`: frames (shared with the harness).
- :mod:`.handle`: the ``h`` that ``train(h)`` gets: batches and the budget clock come from the harness.
- :mod:`.training`: the training worker (``python -m worker train``): runs ``train(h)``, sends the model.
- :mod:`.scoring`: the evaluation worker (``python -m worker eval``): a fresh process that loads the
  saved model and returns, per position, the log-sum-exp and the target logit of its logits.
"""
