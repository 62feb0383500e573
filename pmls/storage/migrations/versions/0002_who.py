"""Who started each job and who deployed each version (the API's authenticated caller).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("training_jobs", sa.Column("started_by", sa.String(200)))
    # The per-caller limit on active jobs counts these.
    op.create_index("training_jobs_caller_idx", "training_jobs", ["started_by", "status"])
    op.add_column("deployments", sa.Column("deployed_by", sa.String(200)))


def downgrade() -> None:
    op.drop_column("deployments", "deployed_by")
    op.drop_index("training_jobs_caller_idx", "training_jobs")
    op.drop_column("training_jobs", "started_by")
