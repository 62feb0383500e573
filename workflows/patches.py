"""Patch ids for ``workflow.patched``: one place, shared by the workflows a change spans.

A change that alters the commands a running workflow has already issued (an activity added, moved or
re-timed) takes ``if workflow.patched(ID)``: new executions record the marker and take the new branch,
executions started before replay on the old one. Their recorded histories stay under
``tests/workflows/histories/<id>/`` (README "Tests").
"""

# The job's MLflow run is created beside load/split/prepare and the studies at once; a search logs its nested trial
# runs every 2 minutes and hands the last ones to the parent, which logs them beside the final fit; a failed or
# cancelled job's run is closed FAILED / KILLED.
MLFLOW_RUN_PATCH = "mlflow-run-beside-the-pipeline"

# ENSEMBLE searches follow the leaders: at a third and two thirds of the tuning window (once every family has
# finished a trial) the trailing half of the families is stopped and the leaders widen into the freed slots.
FOLLOW_LEADERS_PATCH = "ensemble-budget-follows-leaders"
