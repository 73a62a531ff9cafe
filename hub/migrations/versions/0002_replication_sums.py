"""Replication sums: per-experiment running sums (replication_groups, replication_classes),
backfilled from the stored runs, and seq appended to the (track, parent, child) index.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('replication_classes',
    sa.Column('track', sa.String(length=64), nullable=False),
    sa.Column('parent_canonical_sha256', sa.String(length=64), nullable=False),
    sa.Column('child_canonical_sha256', sa.String(length=64), nullable=False),
    sa.Column('hardware_class', sa.String(length=200), nullable=False),
    sa.Column('runs', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('track', 'parent_canonical_sha256', 'child_canonical_sha256', 'hardware_class', name=op.f('pk_replication_classes'))
    )
    op.create_table('replication_groups',
    sa.Column('track', sa.String(length=64), nullable=False),
    sa.Column('parent_canonical_sha256', sa.String(length=64), nullable=False),
    sa.Column('child_canonical_sha256', sa.String(length=64), nullable=False),
    sa.Column('runs', sa.Integer(), nullable=False),
    sa.Column('ok_runs', sa.Integer(), nullable=False),
    sa.Column('bpb_sum', sa.Float(), nullable=False, comment='sum of val_bpb over the ok runs'),
    sa.Column('bpb_sumsq', sa.Float(), nullable=False, comment='sum of squared val_bpb over the ok runs'),
    sa.PrimaryKeyConstraint('track', 'parent_canonical_sha256', 'child_canonical_sha256', name=op.f('pk_replication_groups'))
    )
    with op.batch_alter_table('experiments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_experiments_track_parent_canonical_sha256_child_canonical_sha256'))
        batch_op.create_index(batch_op.f('ix_experiments_track_parent_canonical_sha256_child_canonical_sha256_seq'), ['track', 'parent_canonical_sha256', 'child_canonical_sha256', 'seq'], unique=False)
    op.execute(
        "INSERT INTO replication_groups (track, parent_canonical_sha256, child_canonical_sha256, runs, ok_runs, bpb_sum, bpb_sumsq) "
        "SELECT track, parent_canonical_sha256, child_canonical_sha256, count(*), "
        "count(CASE WHEN outcome = 'ok' THEN val_bpb END), "
        "coalesce(sum(CASE WHEN outcome = 'ok' THEN val_bpb END), 0), "
        "coalesce(sum(CASE WHEN outcome = 'ok' THEN val_bpb * val_bpb END), 0) "
        "FROM experiments GROUP BY track, parent_canonical_sha256, child_canonical_sha256"
    )
    op.execute(
        "INSERT INTO replication_classes (track, parent_canonical_sha256, child_canonical_sha256, hardware_class, runs) "
        "SELECT track, parent_canonical_sha256, child_canonical_sha256, hardware_class, count(*) "
        "FROM experiments GROUP BY track, parent_canonical_sha256, child_canonical_sha256, hardware_class"
    )



def downgrade() -> None:
    with op.batch_alter_table('experiments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_experiments_track_parent_canonical_sha256_child_canonical_sha256_seq'))
        batch_op.create_index(batch_op.f('ix_experiments_track_parent_canonical_sha256_child_canonical_sha256'), ['track', 'parent_canonical_sha256', 'child_canonical_sha256'], unique=False)

    op.drop_table('replication_groups')
    op.drop_table('replication_classes')
