"""The workflow run a job row follows, and the workflow time of its last update: after ``temporal workflow
reset`` the new run takes the row over (a finished job goes back to RUNNING), while late writes of the old
run are ignored.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("training_jobs", sa.Column("run_id", sa.String(64)))
    op.add_column("training_jobs", sa.Column("run_updated_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    op.drop_column("training_jobs", "run_updated_at")
    op.drop_column("training_jobs", "run_id")
