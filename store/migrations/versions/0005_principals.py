"""principals: API keys with a role (viewer, operator, admin)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 05:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('principals',
                    sa.Column('id', sa.String(length=32), nullable=False),
                    sa.Column('name', sa.String(length=128), nullable=False),
                    sa.Column('role', sa.String(length=16), nullable=False),
                    sa.Column('api_key_hash', sa.String(length=128), nullable=False),
                    sa.Column('enabled', sa.Boolean(), nullable=False),
                    sa.Column('created_at', sa.DateTime(), nullable=False),
                    sa.PrimaryKeyConstraint('id'))


def downgrade() -> None:
    op.drop_table('principals')
