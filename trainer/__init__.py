"""autoresearch.trainer: the fixed harness, tracks and the reference train.py."""
