"""batch_chunks.published: a chunk marked dispatched whose message is not known to be out

A dispatch commits first (state and generation), then publishes, then marks the chunk
published; one left unpublished (its dispatcher died in between, or the database took the
mark badly) is sent again by the sweeper within seconds, under a new generation.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 07:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('batch_chunks', sa.Column('published', sa.Boolean(), nullable=False, server_default=sa.true()))


def downgrade() -> None:
    op.drop_column('batch_chunks', 'published')
