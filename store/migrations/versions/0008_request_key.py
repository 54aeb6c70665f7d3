"""inspections.request_key: one row per request across replicas (device + Idempotency-Key)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 05:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('inspections', sa.Column('request_key', sa.String(length=200), nullable=True))
    op.create_index('uq_inspections_request_key', 'inspections', ['request_key'], unique=True)


def downgrade() -> None:
    op.drop_index('uq_inspections_request_key', table_name='inspections')
    op.drop_column('inspections', 'request_key')
