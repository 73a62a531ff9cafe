"""Initial schema: clients, tokens, sources, experiments (+ directions), calibrations, claims, best,
direction aggregates.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('clients',
    sa.Column('key_id', sa.String(length=64), nullable=False),
    sa.Column('public_key', sa.String(length=64), nullable=False),
    sa.Column('display_name', sa.String(length=64), nullable=False),
    sa.Column('name_key', sa.String(length=64), nullable=False, comment='casefolded display name, unique'),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('hardware_class', sa.String(length=200), nullable=True),
    sa.Column('registered_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('record_id', sa.String(length=64), nullable=False),
    sa.Column('envelope_json', sa.Text(), nullable=False),
    sa.CheckConstraint("status IN ('active', 'pending', 'revoked')", name=op.f('ck_clients_status')),
    sa.PrimaryKeyConstraint('key_id', name=op.f('pk_clients')),
    sa.UniqueConstraint('name_key', name=op.f('uq_clients_name_key'))
    )
    op.create_table('direction_aggregates',
    sa.Column('track', sa.String(length=64), nullable=False),
    sa.Column('direction', sa.String(length=200), nullable=False),
    sa.Column('hardware_class', sa.String(length=200), nullable=False),
    sa.Column('tries', sa.Integer(), nullable=False),
    sa.Column('keeps', sa.Integer(), nullable=False),
    sa.Column('crashes', sa.Integer(), nullable=False),
    sa.Column('gain_n', sa.Integer(), nullable=False),
    sa.Column('gain_sum', sa.Float(), nullable=False),
    sa.Column('gain_sumsq', sa.Float(), nullable=False),
    sa.Column('z_n', sa.Integer(), nullable=False),
    sa.Column('z_sum', sa.Float(), nullable=False),
    sa.Column('z_sumsq', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('track', 'direction', 'hardware_class', name=op.f('pk_direction_aggregates'))
    )
    op.create_table('sources',
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('canonical_sha256', sa.String(length=64), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('sha256', name=op.f('pk_sources'))
    )
    with op.batch_alter_table('sources', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sources_canonical_sha256'), ['canonical_sha256'], unique=False)

    op.create_table('tokens',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('token_sha256', sa.String(length=64), nullable=False),
    sa.Column('label', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("kind IN ('enroll', 'read')", name=op.f('ck_tokens_kind')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tokens')),
    sa.UniqueConstraint('token_sha256', name=op.f('uq_tokens_token_sha256'))
    )
    op.create_table('calibrations',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('key_id', sa.String(length=64), nullable=False),
    sa.Column('track', sa.String(length=64), nullable=False),
    sa.Column('hardware_class', sa.String(length=200), nullable=False),
    sa.Column('sigma', sa.Float(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('record_json', sa.Text(), nullable=False),
    sa.Column('envelope_json', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['key_id'], ['clients.key_id'], name=op.f('fk_calibrations_key_id_clients')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_calibrations'))
    )
    with op.batch_alter_table('calibrations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_calibrations_key_id_track_hardware_class'), ['key_id', 'track', 'hardware_class'], unique=False)

    op.create_table('claims',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('track', sa.String(length=64), nullable=False),
    sa.Column('parent_canonical_sha256', sa.String(length=64), nullable=False),
    sa.Column('child_canonical_sha256', sa.String(length=64), nullable=False),
    sa.Column('key_id', sa.String(length=64), nullable=False),
    sa.Column('record_id', sa.String(length=64), nullable=False),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['key_id'], ['clients.key_id'], name=op.f('fk_claims_key_id_clients')),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_claims')),
    sa.UniqueConstraint('track', 'parent_canonical_sha256', 'child_canonical_sha256', name=op.f('uq_claims_track_parent_canonical_sha256_child_canonical_sha256'))
    )
    op.create_table('experiments',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('key_id', sa.String(length=64), nullable=False),
    sa.Column('track', sa.String(length=64), nullable=False),
    sa.Column('parent_sha256', sa.String(length=64), nullable=False),
    sa.Column('child_sha256', sa.String(length=64), nullable=False),
    sa.Column('parent_canonical_sha256', sa.String(length=64), nullable=False),
    sa.Column('child_canonical_sha256', sa.String(length=64), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('val_bpb', sa.Float(), nullable=True),
    sa.Column('parent_val_bpb', sa.Float(), nullable=True),
    sa.Column('z', sa.Float(), nullable=True),
    sa.Column('ecm', sa.Float(), nullable=True),
    sa.Column('gain', sa.Float(), nullable=True, comment="record's gain, else parent/child val_bpb"),
    sa.Column('hardware_class', sa.String(length=200), nullable=False),
    sa.Column('description', sa.String(length=500), nullable=False),
    sa.Column('seed_only', sa.Boolean(), nullable=False),
    sa.Column('needs_replication', sa.Boolean(), nullable=False),
    sa.Column('near_duplicate_of', sa.String(length=64), nullable=True),
    sa.Column('directions', sa.Text(), nullable=False, comment='JSON list of direction keys'),
    sa.Column('const_changes', sa.Text(), nullable=True, comment='JSON {name: [old, new]}'),
    sa.Column('minhash', sa.LargeBinary(), nullable=True, comment="MinHash of the diff's tokens"),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('record_json', sa.Text(), nullable=False),
    sa.Column('envelope_json', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['child_sha256'], ['sources.sha256'], name=op.f('fk_experiments_child_sha256_sources')),
    sa.ForeignKeyConstraint(['key_id'], ['clients.key_id'], name=op.f('fk_experiments_key_id_clients')),
    sa.ForeignKeyConstraint(['near_duplicate_of'], ['experiments.id'], name=op.f('fk_experiments_near_duplicate_of_experiments')),
    sa.ForeignKeyConstraint(['parent_sha256'], ['sources.sha256'], name=op.f('fk_experiments_parent_sha256_sources')),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_experiments')),
    sa.UniqueConstraint('id', name=op.f('uq_experiments_id'))
    )
    with op.batch_alter_table('experiments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_experiments_child_sha256'), ['child_sha256'], unique=False)
        batch_op.create_index(batch_op.f('ix_experiments_hardware_class_seq'), ['hardware_class', 'seq'], unique=False)
        batch_op.create_index(batch_op.f('ix_experiments_key_id_seq'), ['key_id', 'seq'], unique=False)
        batch_op.create_index(batch_op.f('ix_experiments_parent_sha256'), ['parent_sha256'], unique=False)
        batch_op.create_index(batch_op.f('ix_experiments_track_hardware_class_status_val_bpb'), ['track', 'hardware_class', 'status', 'val_bpb'], unique=False)
        batch_op.create_index(batch_op.f('ix_experiments_track_parent_canonical_sha256_child_canonical_sha256'), ['track', 'parent_canonical_sha256', 'child_canonical_sha256'], unique=False)
        batch_op.create_index(batch_op.f('ix_experiments_track_seq'), ['track', 'seq'], unique=False)
        batch_op.create_index(batch_op.f('ix_experiments_track_status_ecm'), ['track', 'status', 'ecm'], unique=False)

    op.create_table('best',
    sa.Column('track', sa.String(length=64), nullable=False),
    sa.Column('scope', sa.String(length=200), nullable=False, comment="hardware class or '*'"),
    sa.Column('experiment_id', sa.String(length=64), nullable=False),
    sa.Column('val_bpb', sa.Float(), nullable=False),
    sa.Column('ecm', sa.Float(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'], name=op.f('fk_best_experiment_id_experiments')),
    sa.PrimaryKeyConstraint('track', 'scope', name=op.f('pk_best'))
    )
    op.create_table('experiment_directions',
    sa.Column('experiment_seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('direction', sa.String(length=200), nullable=False),
    sa.ForeignKeyConstraint(['experiment_seq'], ['experiments.seq'], name=op.f('fk_experiment_directions_experiment_seq_experiments')),
    sa.PrimaryKeyConstraint('experiment_seq', 'direction', name=op.f('pk_experiment_directions'))
    )
    with op.batch_alter_table('experiment_directions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_experiment_directions_direction_experiment_seq'), ['direction', 'experiment_seq'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('experiment_directions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_experiment_directions_direction_experiment_seq'))

    op.drop_table('experiment_directions')
    op.drop_table('best')
    with op.batch_alter_table('experiments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_experiments_track_status_ecm'))
        batch_op.drop_index(batch_op.f('ix_experiments_track_seq'))
        batch_op.drop_index(batch_op.f('ix_experiments_track_parent_canonical_sha256_child_canonical_sha256'))
        batch_op.drop_index(batch_op.f('ix_experiments_track_hardware_class_status_val_bpb'))
        batch_op.drop_index(batch_op.f('ix_experiments_parent_sha256'))
        batch_op.drop_index(batch_op.f('ix_experiments_key_id_seq'))
        batch_op.drop_index(batch_op.f('ix_experiments_hardware_class_seq'))
        batch_op.drop_index(batch_op.f('ix_experiments_child_sha256'))

    op.drop_table('experiments')
    op.drop_table('claims')
    with op.batch_alter_table('calibrations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_calibrations_key_id_track_hardware_class'))

    op.drop_table('calibrations')
    op.drop_table('tokens')
    with op.batch_alter_table('sources', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sources_canonical_sha256'))

    op.drop_table('sources')
    op.drop_table('direction_aggregates')
    op.drop_table('clients')
