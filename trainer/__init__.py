"""autoresearch.trainer: the fixed harness, tracks and the reference train.py.

- :mod:`.tracks` (torch-free): track specs, harness limits, reference sources, ``HARNESS_VERSION``.
- :mod:`.run` (torch-free): :func:`~.run.run_training`, the parent side of one run.
- :mod:`.result` (torch-free): ``RunResult``, ``TrainProgress``, the summary block.
- :mod:`.harness`: the subprocess that trains and measures; :mod:`.evaluate`: the fixed metric.
- :mod:`.data`: corpus, tokenizer, packing; :mod:`.climbmix`: the GPU track's download and loader.
- :mod:`.hardware`: hardware class, software versions, peak FLOPS.

See docs/trainer.md.
"""
