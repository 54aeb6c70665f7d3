"""feedback (operators' corrections) and shadow_results (served vs shadow answers)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 05:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('feedback',
                    sa.Column('id', sa.String(length=36), nullable=False),
                    sa.Column('inspection_id', sa.String(length=36), nullable=False),
                    sa.Column('side', sa.String(length=8), nullable=False),
                    sa.Column('kind', sa.String(length=16), nullable=False),
                    sa.Column('boxes', sa.JSON(), nullable=True),
                    sa.Column('note', sa.Text(), nullable=True),
                    sa.Column('principal', sa.String(length=128), nullable=False),
                    sa.Column('created_at', sa.DateTime(), nullable=False),
                    sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_feedback_inspection_id', 'feedback', ['inspection_id'])
    op.create_index('ix_feedback_created_at', 'feedback', ['created_at'])
    op.create_table('shadow_results',
                    sa.Column('id', sa.String(length=36), nullable=False),
                    sa.Column('inspection_id', sa.String(length=36), nullable=False),
                    sa.Column('model', sa.String(length=64), nullable=False),
                    sa.Column('live_version', sa.Integer(), nullable=False),
                    sa.Column('shadow_version', sa.Integer(), nullable=False),
                    sa.Column('live_verdict', sa.String(length=32), nullable=False),
                    sa.Column('shadow_verdict', sa.String(length=32), nullable=False),
                    sa.Column('agree', sa.Boolean(), nullable=False),
                    sa.Column('live_classes', sa.JSON(), nullable=False),
                    sa.Column('shadow_classes', sa.JSON(), nullable=False),
                    sa.Column('live_detections', sa.JSON(), nullable=False),
                    sa.Column('shadow_detections', sa.JSON(), nullable=False),
                    sa.Column('live_ms', sa.Float(), nullable=True),
                    sa.Column('shadow_ms', sa.Float(), nullable=False),
                    sa.Column('created_at', sa.DateTime(), nullable=False),
                    sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_shadow_results_inspection_id', 'shadow_results', ['inspection_id'])
    op.create_index('ix_shadow_results_model_version', 'shadow_results', ['model', 'shadow_version', 'created_at'])
    op.create_index('ix_shadow_results_model_created', 'shadow_results', ['model', 'created_at'])


def downgrade() -> None:
    op.drop_table('shadow_results')
    op.drop_table('feedback')
