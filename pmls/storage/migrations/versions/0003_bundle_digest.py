"""The content hash of each registered version's bundle, checked before the service loads that version.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("model_artifacts", sa.Column("bundle_sha256", sa.String(64)))


def downgrade() -> None:
    op.drop_column("model_artifacts", "bundle_sha256")
