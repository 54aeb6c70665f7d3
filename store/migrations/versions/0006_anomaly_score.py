"""inspections.anomaly_score: the anomaly model's score of the row's side(s), when served

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 05:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('inspections', sa.Column('anomaly_score', sa.Float(), nullable=True))


def downgrade() -> None:
    op.drop_column('inspections', 'anomaly_score')
