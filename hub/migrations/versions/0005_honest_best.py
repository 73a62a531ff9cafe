"""The hub's own figures and the one community-best rule (issue 14): experiments get the verified
calibration, the hub's Normalised figures, the val_bpb ratio, the rule's verdict and assessment and
the track's z ceiling at arrival; ``needs_replication`` becomes the verdict of that name; direction
aggregates get val_bpb-ratio sums beside the ECM-gain sums.

Data: the z, ECM and gain stored so far were the records' own claims, so they are cleared, and so
are the best rows; ``autoresearch hub admin rederive`` recomputes figures, verdicts, aggregates and
bests from the stored records and calibrations (docs/hub.md, "Upgrading").

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_VERDICTS = "verdict IN ('qualified', 'needs_replication', 'provisional', 'not_significant', 'refuted')"


def upgrade() -> None:
    with op.batch_alter_table("experiments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("calibration_id", sa.String(length=64), nullable=True,
                                      comment="the signer's calibration the hub verified for this run"))
        batch_op.add_column(sa.Column("normalised", sa.Text(), nullable=True, comment="JSON of the hub's own Normalised figures"))
        batch_op.add_column(sa.Column("bpb_ratio", sa.Float(), nullable=True, comment="parent / child val_bpb, same machine"))
        batch_op.add_column(sa.Column("verdict", sa.String(length=24), nullable=True, comment="protocol.best verdict; null: cannot rank"))
        batch_op.add_column(sa.Column("assessment", sa.Text(), nullable=True, comment="JSON of the protocol.best Assessment"))
        batch_op.add_column(sa.Column("z_ceiling", sa.Float(), nullable=True, comment="largest qualified z of the track on arrival"))
        batch_op.alter_column("z", existing_type=sa.Float(), comment="hub z: (parent - child) / sigma of the calibration", existing_nullable=True)
        batch_op.alter_column("ecm", existing_type=sa.Float(), comment="hub ECM of the child on the calibration", existing_nullable=True)
        batch_op.alter_column("gain", existing_type=sa.Float(), comment="hub ECM ratio child / parent",
                              existing_comment="record's gain, else parent/child val_bpb", existing_nullable=True)
        batch_op.drop_column("needs_replication")
        batch_op.create_foreign_key(batch_op.f("fk_experiments_calibration_id_calibrations"), "calibrations", ["calibration_id"], ["id"])
        batch_op.create_index(batch_op.f("ix_experiments_track_verdict_z"), ["track", "verdict", "z"], unique=False)
        batch_op.create_check_constraint("verdict", _VERDICTS)
    with op.batch_alter_table("direction_aggregates", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ratio_n", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("ratio_sum", sa.Float(), nullable=False, server_default="0", comment="sum of parent / child val_bpb"))
        batch_op.add_column(sa.Column("ratio_sumsq", sa.Float(), nullable=False, server_default="0"))
    with op.batch_alter_table("direction_aggregates", schema=None) as batch_op:  # the ORM sets them
        for name in ("ratio_n", "ratio_sum", "ratio_sumsq"):
            batch_op.alter_column(name, server_default=None)
    op.execute("UPDATE experiments SET z = NULL, ecm = NULL, gain = NULL, "
               "bpb_ratio = CASE WHEN val_bpb IS NOT NULL AND parent_val_bpb IS NOT NULL THEN parent_val_bpb / val_bpb END")
    op.execute("UPDATE direction_aggregates SET gain_n = 0, gain_sum = 0, gain_sumsq = 0, z_n = 0, z_sum = 0, z_sumsq = 0")
    op.execute("DELETE FROM best")


def downgrade() -> None:
    with op.batch_alter_table("direction_aggregates", schema=None) as batch_op:
        batch_op.drop_column("ratio_sumsq")
        batch_op.drop_column("ratio_sum")
        batch_op.drop_column("ratio_n")
    with op.batch_alter_table("experiments", schema=None) as batch_op:
        batch_op.drop_constraint("verdict", type_="check")
        batch_op.drop_index(batch_op.f("ix_experiments_track_verdict_z"))
        batch_op.drop_constraint(batch_op.f("fk_experiments_calibration_id_calibrations"), type_="foreignkey")
        batch_op.add_column(sa.Column("needs_replication", sa.Boolean(), nullable=False, server_default=sa.false()))
        for name in ("z_ceiling", "assessment", "verdict", "bpb_ratio", "normalised", "calibration_id"):
            batch_op.drop_column(name)
