"""Typed errors of the protocol layer.

Every failure to read, verify or load a record raises one of these; nothing returns a boolean that a
caller could forget to check::

    ProtocolError                 base: catch this to handle any protocol failure
    ├── SchemaError               payload is not a valid record (unknown schema, bad field, NaN, …;
    │                             reason ``out_of_range`` for a number outside its valid range)
    ├── CanonicalError            payload bytes are not the RFC 8785 canonical form of the record
    ├── EnvelopeError             the DSSE envelope itself is malformed (JSON, base64, payloadType)
    ├── SignatureError            no signature verifies under the expected key
    └── KeyFileError              a key file is missing, unreadable, malformed or too permissive
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base class of every protocol failure. ``reason`` is a short machine-readable code; ``hint``
    (optional) says what to do about it, and the CLI prints it as ``hint: …``."""

    reason = "protocol_error"

    def __init__(self, message: str, *, reason: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason
        self.hint = hint


class SchemaError(ProtocolError):
    """The payload does not validate against its record model (or names an unknown schema)."""

    reason = "schema_invalid"


class CanonicalError(ProtocolError):
    """The payload bytes differ from the RFC 8785 canonical bytes of the record they decode to."""

    reason = "non_canonical"


class EnvelopeError(ProtocolError):
    """The envelope is not a well-formed DSSE envelope (bad JSON, base64, or payloadType)."""

    reason = "envelope_malformed"


class SignatureError(ProtocolError):
    """No signature in the envelope verifies under the expected public key."""

    reason = "bad_signature"


class KeyFileError(ProtocolError):
    """A key file is missing, malformed, or readable by other users."""

    reason = "key_file"
