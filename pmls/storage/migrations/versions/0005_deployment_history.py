"""The served-when history: each promotion, rejection and rollback with its action, the job or caller behind it,
the gates' values, whether it was forced, why, its smoke test, and the version the alias served afterwards.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("deployments", sa.Column("action", sa.String(20), nullable=False, server_default="promote"))
    op.add_column("deployments", sa.Column("job_id", sa.String(100)))
    op.add_column("deployments", sa.Column("gates", JSONB, nullable=False, server_default="[]"))
    op.add_column("deployments", sa.Column("forced", sa.Boolean, nullable=False, server_default=sa.false()))
    op.add_column("deployments", sa.Column("reason", sa.Text))
    op.add_column("deployments", sa.Column("smoke_test", sa.Text))
    op.add_column("deployments", sa.Column("serving_version", sa.String(20)))
    # "Which version served as production at T": the latest change of that alias at or before T.
    op.create_index("deployments_served_idx", "deployments", ["model_name", "alias", "deployed_at"])


def downgrade() -> None:
    op.drop_index("deployments_served_idx", "deployments")
    for column in ("serving_version", "smoke_test", "reason", "forced", "gates", "job_id", "action"):
        op.drop_column("deployments", column)
