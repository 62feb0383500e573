"""Patch ids for ``workflow.patched``: one place, shared by the workflows a change spans.

A change that alters the commands a running workflow has already issued (an activity added, moved or
re-timed) takes ``if workflow.patched(ID)``: new executions record the marker and take the new branch,
executions started before replay on the old one. Their recorded histories stay under
``tests/workflows/histories/<id>/`` (README "Tests"). Once no deployment can still run a workflow started
before a patch, its old branch, its ``deprecate_patch`` step and its histories go.

Live: ``JOB_DEADLINE`` (2026-12-03), ``AUTO_DEPLOY`` (2026-12-03). The histories at the top of
``tests/workflows/histories`` were recorded on the current code, those under ``job-deadline/`` before the first.
``AUTO_DEPLOY`` changes only jobs with ``deployment_config.auto_deploy``, which no recorded history before it has.
"""

# job_timeout bounds the whole job (a timer beside the pipeline), and a cancel signal becomes Temporal's own
# cancel of the execution, which then closes as Cancelled.
JOB_DEADLINE = "job-deadline"

# deployment_config.auto_deploy: the artifact is recorded, the lineage workflow is asked to promote the model
# (activity deploy_model), and only then is the job COMPLETED.
AUTO_DEPLOY = "auto-deploy"
