"""autoresearch.protocol: wire models, canonical JSON, Ed25519 DSSE envelopes and ids.

Imports nothing else of ours. Everything that crosses a process boundary is one of these models.
"""

from .canonical import (
    canonical_bytes,
    canonical_json,
    canonical_source,
    canonical_source_sha256,
    record_id,
    sha256_hex,
)
from .envelope import Envelope, EnvelopeSignature, Verified, pae, parse_envelope, parse_record, payload_type, sign, verify
from .errors import CanonicalError, EnvelopeError, KeyFileError, ProtocolError, SchemaError, SignatureError
from .keys import KeyPair, key_id, load_public_key
from .records import (
    CALIBRATION_SCHEMA,
    CLAIM_SCHEMA,
    CLIENT_SCHEMA,
    EXPERIMENT_SCHEMA,
    MAX_DIFF_BYTES,
    MAX_SOURCE_BYTES,
    OUTCOMES,
    RECORD_TYPES,
    CalibrationPoint,
    CalibrationRecord,
    ClaimRecord,
    ClientRegistration,
    CurveFit,
    ExperimentRecord,
    Normalised,
    Outcome,
    RunMetrics,
    SignedRecord,
    SoftwareVersions,
    Status,
    Suggestion,
    SuggestionKind,
    TrackSpec,
    utc_now,
)


from .api import (
    Accepted,
    CalibrationView,
    ClaimAnswer,
    ClientView,
    CommunityBest,
    DirectionByClass,
    DirectionStats,
    ErrorBody,
    ErrorDetail,
    ExperimentDetail,
    ExperimentView,
    Leaderboard,
    LeaderboardEntry,
    Page,
    Replications,
    SuggestionList,
    TrackView,
)
