"""``autoresearch pull``: fetch someone else's ``train.py`` and check it against its signed record.

Trust: the served source must hash to the child of a record whose envelope verifies under the
signer's registered key (:func:`autoresearch.client.hubtrust.verify_served_code`); the caller then
runs the policy check and asks before applying code from an untrusted key (client/commands/federation.py).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from autoresearch.protocol import ExperimentRecord, TrackSpec

from .errors import BadHubResponse, UsageError
from .federation import local_hardware_class
from .hubclient import HubClient
from .hubtrust import verify_served_code
from .safetext import safe_text


class Pulled(BaseModel):
    """A ``train.py`` fetched from the hub, checked against the signed record that names it."""

    model_config = ConfigDict(frozen=True)

    record_id: str
    key_id: str
    source: str
    description: str
    val_bpb: float | None
    hardware_class: str



def fetch_pull(
    client: HubClient, track: str, *, experiment_id: str | None = None, hardware_class: str | None = None
) -> Pulled:
    """Fetch an experiment's child ``train.py`` (or the community best's) and verify it.

    ``hardware_class``: for the community best, this class (default: this machine's; ``any``: the
    hub's best by ECM across classes).

    Raises:
        UsageError: the hub has no kept experiment to pull yet.
        BadHubResponse: the served source, envelope and record do not agree (tampering, a lying
            signer field or a broken hub), or the source cannot be handled safely.
        HubUnavailable, RecordRejected: the hub failed or refused a request.
    """
    if experiment_id is None:
        klass = None if hardware_class == "any" else (hardware_class or local_hardware_class(_track_spec(client, track)))
        best = client.best(track, hardware_class=klass)
        if best.experiment is None:
            raise UsageError(
                f"the hub has no kept experiment on {track} for {klass or 'any hardware class'} yet",
                hint="its community best is still the track's reference train.py",
            )
        experiment_id = best.experiment.id
    detail = client.experiment(experiment_id)  # a unique prefix is fine: the hub resolves it
    if not detail.id.startswith(experiment_id.lower()):
        raise BadHubResponse(f"the hub answered experiment {detail.id[:12]} when asked for {experiment_id[:12]}")
    source = detail.child_source if detail.child_source is not None else client.source(detail.record.child_sha256)
    verified = verify_served_code(client, detail.id, source, claimed_key_id=detail.key_id)
    record = verified.record
    assert isinstance(record, ExperimentRecord)
    return Pulled(
        record_id=detail.id,
        key_id=detail.key_id,
        source=source,
        description=record.description,
        val_bpb=record.metrics.val_bpb,
        hardware_class=record.hardware_class,
    )


def _track_spec(client: HubClient, track: str) -> TrackSpec:
    """The local spec of ``track`` (name or id), else the hub's."""
    from autoresearch.trainer import tracks

    try:
        return tracks.get_track(track)
    except tracks.UnknownTrack:
        return client.track(track).spec


def pull_message(pulled: Pulled) -> str:
    """Commit message of a pull: names the source record and its signer."""
    val = "—" if pulled.val_bpb is None else f"{pulled.val_bpb:.6f}"
    return (
        f"pull {pulled.record_id[:12]}: {safe_text(pulled.description, one_line=True)} (val_bpb={val} from {pulled.key_id[:16]})\n\n"
        f"source record: {pulled.record_id}\nsigner key id: {pulled.key_id}\n"
    )

