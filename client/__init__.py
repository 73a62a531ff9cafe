"""autoresearch.client: the ``autoresearch`` CLI, workspace, runner, proposers, calibration, hub client.

Runs without FastAPI; the ``hub`` commands import the hub lazily.
"""
