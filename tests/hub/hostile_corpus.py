"""The hostile-input corpus: requests a stranger may send, each with the 4xx and reason code the hub
must answer (docs/hub.md, "Hostile inputs"). ``tests/hub/test_hostile.py`` replays every case on
SQLite and PostgreSQL and checks the answer, that no case gets a 5xx, and that no row changed.

Each case builds its request from a :class:`Ctx` (a hub with ``alice`` registered, real keys, the
test track); families (every numeric field × out-of-range values, every query parameter × control
characters, …) are expanded by loops below, so the list reads as a table of attacks.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from autoresearch.hub.limits import track_bounds
from autoresearch.protocol import (
    KeyPair,
    TrackSpec,
    canonical_bytes,
    canonical_json,
    canonical_source_sha256,
    payload_type,
    sha256_hex,
)

from . import factory

EXPERIMENT = payload_type("autoresearch/experiment/v1")
CALIBRATION = payload_type("autoresearch/calibration/v1")
CLAIM = payload_type("autoresearch/claim/v1")
CLIENT = payload_type("autoresearch/client/v1")
SUBMIT_ROUTES = ("/api/v1/experiments", "/api/v1/calibrations", "/api/v1/claims", "/api/v1/clients")
CHILD = factory.with_constant(factory.REFERENCE, "MATRIX_LR", 0.05)
MANY_CONSTANTS = factory.REFERENCE + "".join(f"C{i} = {i}.0\n" for i in range(200))
"""A parent with 200 extra constants (uploaded by the corpus's set-up), for the changed-symbols cap."""


@dataclass(frozen=True)
class Req:
    """One HTTP request of the corpus."""

    method: str
    path: str
    params: list[tuple[str, str]] | None = None
    content: bytes | None = None
    headers: dict[str, str] | None = None


@dataclass
class Ctx:
    """What a case may use: the track, alice's key (registered), fresh keys on demand."""

    track: TrackSpec
    alice: KeyPair
    extra: dict[str, Any] = field(default_factory=dict)

    def signed(self, payload: bytes, ptype: str = EXPERIMENT, keys: KeyPair | None = None) -> bytes:
        """An envelope over raw ``payload`` bytes, signed by alice (or ``keys``)."""
        return factory.raw_envelope(payload, ptype, keys or self.alice)


@dataclass(frozen=True)
class Case:
    name: str
    attack: str
    build: Callable[[Ctx], Req]
    status: int
    code: str


CORPUS: list[Case] = []


def case(name: str, attack: str, status: int, code: str) -> Callable[[Callable[[Ctx], Req]], Callable[[Ctx], Req]]:
    def add(build: Callable[[Ctx], Req]) -> Callable[[Ctx], Req]:
        CORPUS.append(Case(name, attack, build, status, code))
        return build

    return add


def add(name: str, attack: str, build: Callable[[Ctx], Req], status: int, code: str) -> None:
    CORPUS.append(Case(name, attack, build, status, code))


# --------------------------------------------------------------------------------------------------
# Record dictionaries (valid), mutated by path, signed as raw canonical JSON (no model validation)


def experiment_dict(ctx: Ctx, child: str = CHILD, parent: str = factory.REFERENCE, **kw: Any) -> dict[str, Any]:
    record = factory.experiment(ctx.track, parent, child, **kw)
    out: dict[str, Any] = json.loads(canonical_bytes(record))
    return out


def calibration_dict(ctx: Ctx) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(canonical_bytes(factory.calibration(ctx.track)))
    return out


def claim_dict(ctx: Ctx) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(canonical_bytes(factory.claim(ctx.track, factory.REFERENCE, CHILD)))
    return out


def registration_dict(keys: KeyPair, name: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(canonical_bytes(factory.registration(keys, "placeholder")))
    out["display_name"] = name
    return out


def register_as(name: str) -> Callable[[Ctx], Req]:
    """A fresh key registering under ``name`` (signed by the key it announces, key embedded)."""

    def build(ctx: Ctx) -> Req:
        keys = KeyPair.generate()
        env = json.loads(ctx.signed(payload(registration_dict(keys, name)), CLIENT, keys))
        env["signatures"][0]["publicKey"] = keys.public_key_hex
        return post("/api/v1/clients", json.dumps(env).encode())

    return build


def set_path(record: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """``record`` with the value at a dotted path (``metrics.val_bpb``, ``points.0.seed``) replaced."""
    node: Any = record
    *parents, last = path.split(".")
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return record


def payload(record: dict[str, Any]) -> bytes:
    """RFC 8785 bytes of a record dict (canonical, so only the content is wrong)."""
    return canonical_json(record)


def post(path: str, body: bytes) -> Req:
    return Req("POST", path, content=body)


ROUTE_OF = {EXPERIMENT: "/api/v1/experiments", CALIBRATION: "/api/v1/calibrations", CLAIM: "/api/v1/claims"}
BUILDERS: dict[str, Callable[[Ctx], dict[str, Any]]] = {
    EXPERIMENT: experiment_dict,
    CALIBRATION: calibration_dict,
    CLAIM: claim_dict,
}


def mutated(ptype: str, path: str, value: Any) -> Callable[[Ctx], Req]:
    def build(ctx: Ctx) -> Req:
        return post(ROUTE_OF[ptype], ctx.signed(payload(set_path(BUILDERS[ptype](ctx), path, value)), ptype))

    return build


def replaced(ptype: str, old: bytes, new: bytes) -> Callable[[Ctx], Req]:
    """Sign the record's canonical bytes with ``old`` replaced by ``new`` (for NaN, huge literals …)."""

    def build(ctx: Ctx) -> Req:
        body = payload(BUILDERS[ptype](ctx))
        assert old in body, old
        return post(ROUTE_OF[ptype], ctx.signed(body.replace(old, new, 1), ptype))

    return build


# --------------------------------------------------------------------------------------------------
# A. Body bytes, on every submission route

BODIES: list[tuple[str, str, bytes, int, str]] = [
    ("not_utf8_ff", "a body that is not UTF-8", b'{"payloadType": "\xff\xfe"}', 400, "not_utf8"),
    ("not_utf8_overlong", "an overlong UTF-8 encoding of '/'", b'{"payloadType": "\xc0\xaf"}', 400, "not_utf8"),
    ("not_utf8_surrogate", "a UTF-8-encoded surrogate (CESU-8)", b'{"payloadType": "\xed\xa0\x80"}', 400, "not_utf8"),
    ("not_utf8_latin1", "Latin-1 text", "{\"payloadType\": \"caf\xe9\"}".encode("latin-1"), 400, "not_utf8"),
    ("nested_arrays_100k", "100,000 nested arrays", b"[" * 100_000 + b"]" * 100_000, 400, "json_too_deep"),
    ("nested_objects_5k", "5,000 nested objects", b'{"a":' * 5000 + b"1" + b"}" * 5000, 400, "json_too_deep"),
    ("nested_arrays_17", "17 nested arrays (just past the limit)", b"[" * 17 + b"]" * 17, 400, "json_too_deep"),
    ("nested_in_field", "nesting inside a field value", b'{"payloadType": ' + b"[" * 300 + b"]" * 300 + b"}", 400, "json_too_deep"),
    ("integer_5000_digits", "an integer literal of 5,000 digits", b'{"payloadType": ' + b"9" * 5000 + b"}", 400, "number_too_large"),
    ("integer_2_64", "an integer beyond 2**53", b'{"payloadType": 18446744073709551616}', 400, "number_too_large"),
    ("negative_integer_huge", "a negative integer of 400 digits", b'{"x": -' + b"9" * 400 + b"}", 400, "number_too_large"),
    ("duplicate_key", "a key given twice (parsers disagree)", b'{"payload": "a", "payload": "b"}', 400, "malformed_json"),
    ("lone_surrogate_escape", "a lone surrogate escape", b'{"payloadType": "\\ud800"}', 400, "malformed_json"),
    ("truncated", "truncated JSON", b'{"payloadType": ', 400, "malformed_json"),
    ("empty", "an empty body", b"", 400, "malformed_json"),
    ("trailing_garbage", "JSON followed by garbage", b"{} xyz", 400, "malformed_json"),
    ("json_null", "null", b"null", 400, "envelope_malformed"),
    ("json_array", "an array", b"[1, 2, 3]", 400, "envelope_malformed"),
    ("json_string", "a string", b'"envelope"', 400, "envelope_malformed"),
    ("nan_literal", "a NaN literal", b'{"payloadType": NaN}', 400, "envelope_malformed"),
    ("bom_prefixed", "a UTF-8 byte order mark before the JSON", b"\xef\xbb\xbf{}", 400, "malformed_json"),
]

for _name, _attack, _body, _status, _code in BODIES:
    for _route in SUBMIT_ROUTES:
        add(f"body_{_name}{_route.replace('/api/v1/', '@')}", _attack, lambda ctx, r=_route, b=_body: post(r, b), _status, _code)


@case("body_too_large", "a body one byte over max_body_bytes", 413, "body_too_large")
def _(ctx: Ctx) -> Req:
    return post("/api/v1/experiments", b" " * (1024 * 1024 + 1))


@case("body_declared_huge", "a Content-Length of 5,000 digits", 413, "body_too_large")
def _(ctx: Ctx) -> Req:
    return Req("POST", "/api/v1/experiments", content=b"{}", headers={"content-length": "9" * 5000})


# --------------------------------------------------------------------------------------------------
# B. Query parameters and paths

CONTROL_VALUES = [("nul", "\x00"), ("nul_inside", "cpu\x00x"), ("escape", "\x1b[2J"), ("bell", "\x07"), ("del", "\x7f"),
                  ("c1_nel", "\x85"), ("newline", "a\nb")]
QUERY_PARAMS: list[tuple[str, str]] = [
    ("/api/v1/experiments", "track"), ("/api/v1/experiments", "hardware_class"), ("/api/v1/experiments", "outcome"),
    ("/api/v1/experiments", "client"), ("/api/v1/experiments", "cursor"), ("/api/v1/experiments", "since"),
    ("/api/v1/experiments", "limit"), ("/api/v1/tracks/{track}/best", "hardware_class"),
    ("/api/v1/tracks/{track}/suggestions", "hardware_class"), ("/api/v1/tracks/{track}/suggestions", "client"),
    ("/api/v1/tracks/{track}/progress", "hardware_class"), ("/api/v1/activity", "hours"),
]
for _path, _param in QUERY_PARAMS:
    for _vname, _value in CONTROL_VALUES:
        add(
            f"query_{_param}_{_vname}@{_path}", f"{_value!r} in ?{_param}= (PostgreSQL cannot hold NUL)",
            lambda ctx, p=_path, k=_param, v=_value: Req("GET", p.format(track=ctx.track.id), params=[(k, v)]),
            400, "bad_parameter",
        )
add("query_name_nul", "a NUL in a parameter's name", lambda ctx: Req("GET", "/api/v1/experiments", params=[("tr\x00ack", "x")]),
    400, "bad_parameter")

PATHS = ["/api/v1/tracks/%00", "/api/v1/tracks/cpu%00/leaderboard", "/api/v1/tracks/%1b%5b2J/directions",
         "/api/v1/tracks/x%00/best", "/api/v1/tracks/x%0a/suggestions", "/api/v1/experiments/%00",
         "/api/v1/sources/%00", "/api/v1/clients/%00", "/api/v1/tracks/%00/progress"]
for _i, _p in enumerate(PATHS):
    add(f"path_control_{_i}", f"a control character in the path {_p}", lambda ctx, p=_p: Req("GET", p), 400, "bad_parameter")


def _cursor(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


CURSORS = [("beyond_63_bits", _cursor(b"s9223372036854775808")), ("beyond_64_bits", _cursor(b"s" + b"9" * 30)),
("negative", _cursor(b"s-1")), ("exponent", _cursor(b"s1e5")),
           ("arabic_digits", _cursor("s١٢".encode())), ("no_prefix", _cursor(b"123")), ("not_base64", "!!!"),
           ("spaces", _cursor(b"s 12")), ("underscore", _cursor(b"s1_000"))]
for _n, _c in CURSORS:
    add(f"cursor_{_n}", "a pagination cursor the hub never issued", lambda ctx, c=_c: Req("GET", "/api/v1/experiments", params=[("cursor", c)]),
        400, "bad_cursor")

BAD_QUERY = [
    ("/api/v1/experiments", "limit", "9" * 5000), ("/api/v1/experiments", "limit", "0"), ("/api/v1/experiments", "limit", "-1"),
    ("/api/v1/experiments", "limit", "1e3"), ("/api/v1/experiments", "since", "9999-99-99"),
    ("/api/v1/experiments", "client", "Z" * 65), ("/api/v1/experiments", "track", "x" * 65),
    ("/api/v1/activity", "hours", "0"), ("/api/v1/activity", "hours", "-1"), ("/api/v1/activity", "hours", "1e400"),
    ("/api/v1/activity", "hours", "nan"), ("/api/v1/activity", "hours", "inf"), ("/api/v1/activity", "hours", "1e9"),
    ("/api/v1/tracks/{track}/progress", "limit", "0"), ("/api/v1/tracks/{track}/progress", "limit", "9" * 400),
    ("/api/v1/tracks/{track}/suggestions", "client", "not-a-key"), ("/api/v1/tracks/{track}/best", "hardware_class", "x" * 201),
]
for _i, (_path, _param, _value) in enumerate(BAD_QUERY):
    add(f"query_invalid_{_param}_{_i}", f"?{_param}={_value[:20]!r}", lambda ctx, p=_path, k=_param, v=_value: Req("GET", p.format(track=ctx.track.id), params=[(k, v)]),
        422, "invalid_request")
add("cursor_digits_4000", "a cursor of 4,000 digits (longer than any the hub issues)",
    lambda ctx: Req("GET", "/api/v1/experiments", params=[("cursor", _cursor(b"s" + b"9" * 4000))]), 422, "invalid_request")
add("query_client_unknown_name", "a client filter naming no display name", lambda ctx: Req("GET", "/api/v1/experiments", params=[("client", "ZZ" * 32)]),
    404, "unknown_client")
add("query_since_naive", "a since without a timezone", lambda ctx: Req("GET", "/api/v1/experiments", params=[("since", "2026-01-01T00:00:00")]),
    400, "bad_request")
add("query_outcome_unknown", "an unknown outcome", lambda ctx: Req("GET", "/api/v1/experiments", params=[("outcome", "won")]), 400, "bad_request")
add("experiment_id_long", "an id of 65 hex digits", lambda ctx: Req("GET", "/api/v1/experiments/" + "a" * 65), 422, "invalid_request")
add("experiment_id_unicode", "an id of non-ASCII digits", lambda ctx: Req("GET", "/api/v1/experiments/" + "١" * 12), 422, "invalid_request")
add("track_unknown_long", "a track name of 5,000 characters", lambda ctx: Req("GET", "/api/v1/tracks/" + "x" * 5000), 404, "unknown_track")
add("bearer_huge", "a 10,000-character bearer token", lambda ctx: Req("GET", "/api/v1/tracks", headers={"authorization": "Bearer " + "x" * 10_000}),
    401, "bad_token")
add("bearer_wrong_scheme", "Basic instead of Bearer", lambda ctx: Req("GET", "/api/v1/tracks", headers={"authorization": "Basic YTpi"}), 401, "bad_token")


# --------------------------------------------------------------------------------------------------
# C. Numbers out of their documented ranges (signed by a registered key, canonical bytes)

TINY = 5e-324  # the smallest subnormal double
OUT_OF_RANGE: dict[str, dict[str, list[Any]]] = {
    EXPERIMENT: {
        "metrics.val_bpb": [0.0, TINY, 1e-4, 1001.0, 1.7e308, -1.5],
        "metrics.training_seconds": [-1.0, TINY, 1e7],
        "metrics.total_seconds": [-1.0, TINY, 1e300],
        "metrics.startup_seconds": [-0.5, 1e9],
        "metrics.eval_seconds": [-0.5, TINY],
        "metrics.peak_vram_mib": [-1.0, 1e300, TINY],
        "metrics.mfu_percent": [-1.0, 1001.0, TINY],
        "metrics.total_tokens": [-1, 10**15 + 1],
        "metrics.tokens_per_second": [-1.0, 1e21, TINY],
        "metrics.num_steps": [-1, 10**12 + 1],
        "metrics.num_params": [-1, 10**13 + 1],
        "metrics.depth": [-1, 10_001],
        "parent_val_bpb": [0.0, TINY, 1e308],
        "normalised.delta_val_bpb": [-1001.0, 1e308, TINY],
        "normalised.sigma": [-1.0, 1e308, TINY],
        "normalised.z": [1e7, -1e7, TINY, 1.7e308],
        "normalised.ecm": [0.0, 1e-7, 1e7, TINY],
        "normalised.ecm_parent": [0.0, 1e300],
        "normalised.gain": [0.0, TINY, 1e-13, 1.7e308],
    },
    CALIBRATION: {
        "sigma": [-1.0, 1e4, TINY],
        "reference_ecm": [0.0, 1e7],
        "time_budget_seconds": [0.0, -5.0, 1e9],
        "min_budget_seconds": [0.0, TINY],
        "max_budget_seconds": [1e9],
        "tokens_per_second": [1e11, -1.0],
        "matmul_tflops": [1e7, -1.0, TINY],
        "fit.a": [0.0, 1e13],
        "fit.b": [0.0, 101.0],
        "fit.c": [1e4, -1e4],
        "fit.rmse": [-1.0, 1e4],
        "points.0.budget_seconds": [0.0, 1e9],
        "points.0.val_bpb": [0.0, 1e4],
        "points.0.training_seconds": [-1.0],
        "points.0.num_steps": [-1, 10**12 + 1],
        "points.0.tokens_per_second": [1e11],
    },
    CLAIM: {"lease_seconds": [0, -1, 86_401, 10**9]},
}
for _ptype, _fields in OUT_OF_RANGE.items():
    for _path, _values in _fields.items():
        for _v in _values:
            add(f"range_{_ptype.split('.')[2]}_{_path}={_v!r}", f"{_path} = {_v!r}, outside its valid range",
                mutated(_ptype, _path, _v), 422, "out_of_range")


def _per_track(ctx: Ctx) -> Any:
    return track_bounds(ctx.track)


PER_TRACK: list[tuple[str, Callable[[Ctx], Any]]] = [
    ("metrics.val_bpb", lambda ctx: _per_track(ctx).max_val_bpb * 1.01),
    ("parent_val_bpb", lambda ctx: _per_track(ctx).max_val_bpb * 2),
    ("metrics.training_seconds", lambda ctx: _per_track(ctx).max_training_seconds + 1),
    ("metrics.total_seconds", lambda ctx: _per_track(ctx).max_run_seconds + 1),
    ("metrics.startup_seconds", lambda ctx: _per_track(ctx).max_run_seconds * 2),
    ("metrics.eval_seconds", lambda ctx: _per_track(ctx).max_run_seconds + 0.5),
    ("metrics.total_tokens", lambda ctx: _per_track(ctx).max_tokens + 1),
    ("metrics.num_steps", lambda ctx: _per_track(ctx).max_steps + 1),
]
for _path, _value_of in PER_TRACK:
    add(f"track_range_{_path}", f"{_path} beyond the track's bound (vocabulary, budget)",
        lambda ctx, p=_path, f=_value_of: mutated(EXPERIMENT, p, f(ctx))(ctx), 422, "out_of_range")

CAL_PER_TRACK: list[tuple[str, Callable[[Ctx], Any]]] = [
    ("time_budget_seconds", lambda ctx: ctx.track.time_budget * 2),
    ("points.0.budget_seconds", lambda ctx: _per_track(ctx).max_budget_seconds * 2),
    ("points.1.budget_seconds", lambda ctx: _per_track(ctx).min_budget_seconds / 2),
    ("max_budget_seconds", lambda ctx: _per_track(ctx).max_budget_seconds + 1),
    ("min_budget_seconds", lambda ctx: 11.0),  # above max_budget_seconds (10)
    ("points.0.val_bpb", lambda ctx: _per_track(ctx).max_val_bpb + 1),
    ("points.0.training_seconds", lambda ctx: 1e5),
]
for _path, _value_of in CAL_PER_TRACK:
    add(f"track_range_calibration_{_path}", f"calibration {_path} beyond the track's bound",
        lambda ctx, p=_path, f=_value_of: mutated(CALIBRATION, p, f(ctx))(ctx), 422, "out_of_range")

for _ptype in (EXPERIMENT, CALIBRATION, CLAIM):
    add(f"created_before_2025_{_ptype.split('.')[2]}", "created_at in 1970", mutated(_ptype, "created_at", "1970-01-01T00:00:00Z"),
        422, "out_of_range")
add("lease_too_long_track", "a lease beyond 2 × budget + margin", mutated(CLAIM, "lease_seconds", 611), 422, "lease_too_long")
add("lease_a_day", "a day-long lease on a 5 s track", mutated(CLAIM, "lease_seconds", 86_400), 422, "lease_too_long")

for _name, _old, _new, _code in [
    ("nan", b'"val_bpb":1.5', b'"val_bpb":NaN', "schema_invalid"),
    ("infinity", b'"val_bpb":1.5', b'"val_bpb":Infinity', "schema_invalid"),
    ("minus_infinity", b'"z":3', b'"z":-Infinity', "schema_invalid"),
    ("overflow_1e400", b'"z":3', b'"z":1e400', "schema_invalid"),
    ("integer_5000_digits", b'"seed":0', b'"seed":' + b"9" * 5000, "schema_invalid"),
    ("seed_2_53", b'"seed":0', b'"seed":9007199254740992', "out_of_range"),
    ("seed_minus_2_53", b'"seed":0', b'"seed":-9007199254740992', "out_of_range"),
    ("nested_10k", b'"seed":0', b'"seed":' + b"[" * 10_000 + b"]" * 10_000, "schema_invalid"),
    ("string_number", b'"val_bpb":1.5', b'"val_bpb":"1.5"', "schema_invalid"),
    ("bool_number", b'"num_steps":10', b'"num_steps":true', "schema_invalid"),
    ("float_count", b'"num_steps":10', b'"num_steps":10.5', "schema_invalid"),
    ("not_utf8_payload", b'"description":"test change"', b'"description":"\xff"', "schema_invalid"),
]:
    add(f"payload_{_name}", f"payload with {_new[:40]!r}", replaced(EXPERIMENT, _old, _new), 422, _code)


# --------------------------------------------------------------------------------------------------
# D. Text: control characters, bidi controls, NUL (PostgreSQL cannot store it)

BAD_TEXT = [("nul", "a\x00b"), ("escape_clear", "\x1b[2J\x1b[H"), ("escape_title", "\x1b]0;pwned\x07"),
            ("hyperlink", "\x1b]8;;http://x\x1b\\x\x1b]8;;\x1b\\"), ("bell", "\x07"), ("backspace", "ok\x08\x08no"),
            ("del", "\x7f"), ("c1_csi", "\x9b2J"), ("rlo", "abc\u202edcba"), ("lri", "\u2066x\u2069")]
ONE_LINE_ONLY = [("newline", "two\nlines"), ("carriage_return", "over\rwrite"), ("tab", "a\tb")]
TEXT_FIELDS: list[tuple[str, str]] = [
    (EXPERIMENT, "description"), (EXPERIMENT, "hardware_class"), (EXPERIMENT, "harness_version"),
    (EXPERIMENT, "software.python"), (EXPERIMENT, "software.torch"), (CALIBRATION, "hardware_class"),
    (CLAIM, "description"),
]
for _ptype, _path in TEXT_FIELDS:
    for _n, _text in BAD_TEXT + ONE_LINE_ONLY:
        add(f"text_{_ptype.split('.')[2]}_{_path}_{_n}", f"{_text!r} in {_path}", mutated(_ptype, _path, _text), 422, "bad_text")
for _n, _text in BAD_TEXT:
    add(f"text_error_tail_{_n}", f"{_text!r} in the error tail",
        lambda ctx, t=_text: post("/api/v1/experiments", ctx.signed(payload(experiment_dict(ctx, outcome="crash", val_bpb=None) | {"error": t}))),
        422, "bad_text")


# --------------------------------------------------------------------------------------------------
# E. Sources and changes: cost bounds, Trojan Source, unparsable code


def _experiment_to(child: str, parent: str = factory.REFERENCE) -> Callable[[Ctx], Req]:
    """An experiment parent → child signed by alice; the child may not even parse, and its canonical
    hash is a placeholder: the hub must refuse the child before it compares canonical hashes."""

    def build(ctx: Ctx) -> Req:
        record = experiment_dict(ctx, parent=parent)
        record |= {"child_sha256": sha256_hex(child), "child_canonical_sha256": "0" * 64,
                   "diff": factory.unified_diff(parent, child)}
        return post("/api/v1/experiments", ctx.signed(payload(record)))

    return build


CHILDREN: list[tuple[str, str, str, int, str]] = [
    ("deep_unary", "a child nesting 5,000 unary minus", factory.REFERENCE + "X = " + "-" * 5000 + "1\n", 422, "unparsable_source"),
    ("deep_binop", "a child of 600 chained additions (tree depth 600)", factory.REFERENCE + "X = " + "1+" * 600 + "1\n", 422, "unparsable_source"),
    ("deep_parens", "a child with 250 nested parentheses", factory.REFERENCE + "X = " + "(" * 250 + "1" + ")" * 250 + "\n", 422, "unparsable_source"),
    ("deep_lists", "a child with 150 nested lists", factory.REFERENCE + "X = " + "[" * 150 + "]" * 150 + "\n", 422, "unparsable_source"),
    ("nodes_25k", "a child of 25,000 syntax-tree nodes", factory.REFERENCE + "X = [" + "0," * 25_000 + "]\n", 413, "source_too_complex"),
    ("trojan_source", "a bidi override hiding code (CVE-2021-42574)", factory.REFERENCE + 'S = "\u202e#"\n', 422, "bad_text"),
    ("nul_in_code", "a NUL in the child", factory.REFERENCE + "X = 1\x00\n", 422, "bad_text"),
    ("syntax_error", "a child that does not parse", factory.REFERENCE + "def broken(:\n", 422, "unparsable_source"),
]
for _n, _attack, _child, _status, _code in CHILDREN:
    add(f"child_{_n}", _attack, _experiment_to(_child), _status, _code)

add("too_many_changes", "an experiment changing 65 constants", _experiment_to(
    MANY_CONSTANTS.replace(".0\n", ".5\n", 65), MANY_CONSTANTS), 413, "too_many_changes")
add("too_many_changes_semicolons", "65 constants changed on one line", _experiment_to(
    factory.REFERENCE + ";".join(f"K{i} = {i}" for i in range(65)) + "\n"), 413, "too_many_changes")
add("too_many_new_functions", "70 new functions", _experiment_to(
    factory.REFERENCE + "".join(f"def f{i}():\n    return {i}\n" for i in range(70))), 413, "too_many_changes")


def _put(text: bytes, sha: str | None = None) -> Callable[[Ctx], Req]:
    def build(ctx: Ctx) -> Req:
        return Req("PUT", f"/api/v1/sources/{sha or sha256_hex(text)}", content=text)

    return build


SOURCES: list[tuple[str, str, bytes, int, str]] = [
    ("not_utf8", "a train.py in Latin-1", "X = 'café'\n".encode("latin-1"), 400, "not_utf8"),
    ("nul", "a NUL byte in the source", b"X = 1\x00\n", 422, "unparsable_source"),
    ("deep_unary", "100,000 unary minus (the parser runs out of memory)", b"X = " + b"-" * 100_000 + b"1\n", 422, "unparsable_source"),
    ("deep_binop", "50,000 chained additions (recursion)", b"X = " + b"1+" * 50_000 + b"1\n", 422, "unparsable_source"),
    ("deep_tree", "a tree 500 levels deep", b"X = " + b"1+" * 500 + b"1\n", 422, "unparsable_source"),
    ("deep_parens", "300 nested parentheses", b"X = " + b"(" * 300 + b"1" + b")" * 300 + b"\n", 422, "unparsable_source"),
    ("nodes_40k", "a list of 40,000 numbers", b"X = [" + b"0," * 40_000 + b"]\n", 413, "source_too_complex"),
    ("trojan_source", "a bidi override in a string", 'S = "\u202e"\n'.encode(), 422, "bad_text"),
    ("too_large", "a 600 KiB train.py", b"# " + b"x" * 600 * 1024 + b"\n", 413, "source_too_large"),
    ("syntax_error", "not Python", b"def (:\n", 422, "unparsable_source"),
]
for _n, _attack, _text, _status, _code in SOURCES:
    add(f"source_{_n}", _attack, _put(_text), _status, _code)
add("source_hash_mismatch", "a body that does not hash to the path", _put(b"X = 2\n", sha256_hex("X = 1\n")), 422, "hash_mismatch")
add("source_bad_sha_path", "a path that is not a SHA-256", lambda ctx: Req("PUT", "/api/v1/sources/xyz", content=b"X = 1\n"), 422, "invalid_request")


# --------------------------------------------------------------------------------------------------
# F. Display names: look-alikes, invisible and control characters, normalisation

BAD_NAMES: list[tuple[str, str, str]] = [
    ("leading_space", " alice", "bad_display_name"), ("trailing_space", "alice ", "bad_display_name"),
    ("double_space", "al  ice", "bad_display_name"), ("zero_width_space", "alice\u200b", "bad_display_name"),
    ("zero_width_joiner", "ali\u200dce", "bad_display_name"), ("zero_width_prefix", "\u200balice", "bad_display_name"),
    ("bom", "alice\ufeff", "bad_display_name"), ("soft_hyphen", "al\u00adice", "bad_display_name"),
    ("rlo", "alice\u202e", "bad_text"), ("lri", "\u2066alice", "bad_text"),
    ("nbsp", "alice\u00a0bob", "bad_display_name"), ("ideographic_space", "alice\u3000bob", "bad_display_name"),
    ("hangul_filler", "\u3164", "bad_display_name"), ("hangul_filler_suffix", "alice\u3164", "bad_display_name"),
    ("braille_blank", "\u2800", "bad_display_name"), ("cgj", "al\u034fice", "bad_display_name"),
    ("private_use", "\ue000", "bad_display_name"), ("tag_character", "alice\U000e0041", "bad_display_name"),
    ("unassigned", "alice\U000e0fff", "bad_display_name"), ("nul", "alice\x00", "bad_text"),
    ("newline", "alice\nbob", "bad_text"), ("escape", "\x1b[31malice", "bad_text"), ("tab", "alice\tbob", "bad_text"),
    ("not_nfc", "Jose\u0301", "bad_display_name"), ("mixed_cyrillic_a", "\u0430lice", "bad_display_name"),
    ("mixed_greek_omicron", "b\u03bfb", "bad_display_name"), ("line_separator", "alice\u2028", "bad_display_name"),
    ("only_space", " ", "bad_display_name"), ("combining_only", "\u0301", "bad_display_name"),
]
for _n, _name, _code in BAD_NAMES:
    add(f"name_{_n}", f"display name {_name!r}", register_as(_name), 422, _code)

LOOK_ALIKES = ["ALICE", "Alice", "a1ice", "aIice", "al1ce", "\u0430\u0406\u0456\u0441\u0435", "\uff41\uff4c\uff49\uff43\uff45", "AL1CE"]
for _i, _name in enumerate(LOOK_ALIKES):
    add(f"name_look_alike_{_i}", f"{_name!r} beside the registered 'alice'", register_as(_name), 409, "display_name_taken")
add("name_too_long", "a 65-character name", register_as("x" * 65), 422, "schema_invalid")


# --------------------------------------------------------------------------------------------------
# G. Signatures, keys and schemas (kept from tests/hub/test_bad_input.py's families, on every route)


@case("unregistered_signer", "a record signed by a key the hub does not know", 403, "unregistered_key")
def _(ctx: Ctx) -> Req:
    return post("/api/v1/experiments", ctx.signed(payload(experiment_dict(ctx)), keys=KeyPair.generate()))


@case("claim_by_stranger", "a claim signed by an unregistered key", 403, "unregistered_key")
def _(ctx: Ctx) -> Req:
    return post("/api/v1/claims", ctx.signed(payload(claim_dict(ctx)), CLAIM, KeyPair.generate()))


@case("forged_signature", "alice's key id over another key's signature", 403, "bad_signature")
def _(ctx: Ctx) -> Req:
    return post("/api/v1/experiments", factory.raw_envelope(payload(experiment_dict(ctx)), EXPERIMENT, KeyPair.generate(), keyid=ctx.alice.key_id))


@case("claim_as_experiment", "a claim payload posted as an experiment", 422, "wrong_schema")
def _(ctx: Ctx) -> Req:
    return post("/api/v1/experiments", ctx.signed(payload(claim_dict(ctx)), CLAIM))


@case("unknown_track_claim", "a claim on a track the hub does not run", 404, "unknown_track")
def _(ctx: Ctx) -> Req:
    return mutated(CLAIM, "track", "other-0123456789ab")(ctx)


@case("claim_canonical_not_hex", "a canonical hash that is not hex", 422, "schema_invalid")
def _(ctx: Ctx) -> Req:
    return mutated(CLAIM, "child_canonical_sha256", "Z" * 64)(ctx)


@case("claim_unknown_field", "a claim with a field the schema lacks", 422, "schema_invalid")
def _(ctx: Ctx) -> Req:
    return mutated(CLAIM, "priority", 10**6)(ctx)


@case("child_canonical_mismatch", "a child canonical hash of another source", 422, "hash_mismatch")
def _(ctx: Ctx) -> Req:
    return mutated(EXPERIMENT, "child_canonical_sha256", canonical_source_sha256(factory.REFERENCE))(ctx)


def corpus_size() -> int:
    """Distinct inputs in the corpus (every case is one request)."""
    return len(CORPUS)
