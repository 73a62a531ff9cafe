"""Quotas and look-alike names: the quota_usage table (fixed-window usage per subject), clients.enrolled_by
(the enrollment token whose quotas a key counts against), and name_key recomputed as the SHA-256 of
the display name's confusable skeleton (hub/names.py). Names that already collide under the new key
keep their registration: the oldest holds the skeleton's key, later ones get a key of their own.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_OLD_COMMENT = "casefolded display name, unique"
_NEW_COMMENT = "SHA-256 of the display name's confusable skeleton, unique"


def upgrade() -> None:
    op.create_table(
        "quota_usage",
        sa.Column("subject", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False, comment="records, source_bytes, registrations"),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("subject", "kind", "window_start", name=op.f("pk_quota_usage")),
    )
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "enrolled_by",
                sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                nullable=True,
                comment="the enrollment token that registered the key (its quotas count it)",
            )
        )
        batch_op.create_foreign_key(batch_op.f("fk_clients_enrolled_by_tokens"), "tokens", ["enrolled_by"], ["id"])
        batch_op.alter_column(
            "name_key", existing_type=sa.String(length=64), existing_nullable=False,
            comment=_NEW_COMMENT, existing_comment=_OLD_COMMENT,
        )
    _rekey_names()


def _rekey_names() -> None:
    from autoresearch.hub.names import name_key  # the one definition; a migration runs with the app

    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT key_id, display_name FROM clients ORDER BY registered_at, key_id")).all()
    # two passes, so a new key never collides with an old one still in the table
    for key_id, _ in rows:
        conn.execute(sa.text("UPDATE clients SET name_key = :k WHERE key_id = :id"), {"k": _temporary(key_id), "id": key_id})
    taken: set[str] = set()
    for key_id, display_name in rows:
        key = name_key(display_name)
        if key in taken:  # registered before look-alikes were refused: keep it, under a key of its own
            key = hashlib.sha256(f"{key}:{key_id}".encode()).hexdigest()
        taken.add(key)
        conn.execute(sa.text("UPDATE clients SET name_key = :k WHERE key_id = :id"), {"k": key, "id": key_id})


def _temporary(key_id: str) -> str:
    return hashlib.sha256(f"rekey:{key_id}".encode()).hexdigest()


def downgrade() -> None:
    conn = op.get_bind()
    for key_id, display_name in conn.execute(sa.text("SELECT key_id, display_name FROM clients")).all():
        conn.execute(sa.text("UPDATE clients SET name_key = :k WHERE key_id = :id"), {"k": display_name.casefold(), "id": key_id})
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.alter_column(
            "name_key", existing_type=sa.String(length=64), existing_nullable=False,
            comment=_OLD_COMMENT, existing_comment=_NEW_COMMENT,
        )
        batch_op.drop_constraint(batch_op.f("fk_clients_enrolled_by_tokens"), type_="foreignkey")
        batch_op.drop_column("enrolled_by")
    op.drop_table("quota_usage")
