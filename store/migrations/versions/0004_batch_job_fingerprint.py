"""batch job submission fingerprint; client keys scoped by submitter

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 04:40:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('batch_jobs', schema=None) as batch_op:
        # "<submitter>:<Idempotency-Key>": a key up to 128 characters plus its scope
        batch_op.alter_column('client_key', existing_type=sa.String(length=128), type_=sa.String(length=255),
                              existing_nullable=True)
        batch_op.add_column(sa.Column('client_fingerprint', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('batch_jobs', schema=None) as batch_op:
        batch_op.drop_column('client_fingerprint')
        batch_op.alter_column('client_key', existing_type=sa.String(length=255), type_=sa.String(length=128),
                              existing_nullable=True)
