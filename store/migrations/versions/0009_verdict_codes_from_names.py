"""verdict codes rewritten from verdict names (the taxonomy gained `review`, severity 1)

A row stores its verdict's name and code; the name is the truth, the code is the verdict's
severity in the taxonomy of the day the row was written. Adding `review` moved the codes of
component_defect (1 -> 2), solder_defect (2 -> 3) and discard (3 -> 4): this rewrites every
row's codes from its names with the taxonomy the gateway runs with, so a stored code means
what today's code means. Names the taxonomy no longer has keep their codes. Idempotent.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 05:45:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    from pcb import taxonomy

    for v in taxonomy.load().verdicts:
        for name_col, code_col in (("verdict", "verdict_code"), ("board_verdict", "board_verdict_code")):
            op.execute(sa.text(f"UPDATE inspections SET {code_col} = :code WHERE {name_col} = :name "
                               f"AND ({code_col} IS NULL OR {code_col} <> :code)")
                       .bindparams(code=v.code, name=v.name))


def downgrade() -> None:
    pass  # the codes follow the names of whichever taxonomy runs: nothing to undo
