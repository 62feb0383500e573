"""Every name that crosses a process through Temporal, once: task queues, workflow types, signals and queries,
memo keys, search attributes (a family's search runs as a child whose id is its study's name,
:func:`pmls.contracts.tuning.study_name`). The API, the workers, the stack and the workflows read them from here.

A renamed queue or attribute is a deployment change (running jobs carry the old names in their history and
memo): change it here and nowhere else.
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

# -- task queues (defaults; a deployment may rename them through settings, the memo carries the choice) ------
TRAINING_QUEUE = "pmls-training"  # workflows and the light I/O activities
TRIALS_QUEUE = "pmls-trials"  # CPU-heavy activities: data preparation, trials, final fits, the champion

# -- workflow types -------------------------------------------------------------------------------------------
TRAINING_WORKFLOW = "TrainingWorkflow"
TUNING_WORKFLOW = "TuningWorkflow"
LINEAGE_WORKFLOW = "LineageWorkflow"  # one per model lineage: its promotions and rollbacks, one at a time


def lineage_workflow_id(model_name: str) -> str:
    return f"lineage/{model_name}"


# -- signals and queries --------------------------------------------------------------------------------------
CANCEL_SIGNAL = "cancel"  # TrainingWorkflow: stop the job (reason)
PROGRESS_QUERY = "progress"  # both workflows: their live progress
TUNING_PROGRESS_SIGNAL = "tuning_progress"  # TuningWorkflow -> its parent: a family's progress
STOP_SEARCH_SIGNAL = "stop_search"  # parent -> TuningWorkflow: give the remaining time to other families
WIDEN_SIGNAL = "widen"  # parent -> TuningWorkflow: run more trials at once
PROMOTE_UPDATE = "promote"  # LineageWorkflow: gates, alias move, smoke test (rollback when it fails), record
ROLLBACK_UPDATE = "rollback"  # LineageWorkflow: back to the previous version, or a named one
LINEAGE_STATE_QUERY = "state"  # LineageWorkflow: what each alias serves

# -- memo keys (set by the API when a job starts, copied to the children) -----------------------------------
MEMO_TRIALS_QUEUE = "trials_task_queue"
MEMO_TRIAL_SLOTS = "trial_slots"
MEMO_TRIALS_PER_RUN = "trials_per_run"  # tests shorten a tuning run before it continues as new
MEMO_OUTAGE_BUDGET = (
    "outage_budget_seconds"  # how long calls retry an unreachable server (PMLS_OUTAGE_BUDGET_SECONDS)
)
MEMO_MAX_RUNNING = "max_running_jobs"  # PMLS_MAX_RUNNING_JOBS when set: the job waits its turn while QUEUED
CHILD_MEMO_KEYS = (MEMO_TRIALS_QUEUE, MEMO_TRIAL_SLOTS, MEMO_OUTAGE_BUDGET)

# -- search attributes (registered on the namespace by `pmls migrate` and the embedded stack) ----------------
STATUS_KEY = SearchAttributeKey.for_keyword("TrainingStatus")
MODEL_TYPE_KEY = SearchAttributeKey.for_keyword("ModelType")
TRAINING_MODE_KEY = SearchAttributeKey.for_keyword("TrainingMode")
MODEL_NAME_KEY = SearchAttributeKey.for_keyword("ModelName")
SEARCH_ATTRIBUTE_KEYS = (STATUS_KEY, MODEL_TYPE_KEY, TRAINING_MODE_KEY, MODEL_NAME_KEY)
# name -> the type as `temporal server start-dev --search-attribute NAME=TYPE` spells it
SEARCH_ATTRIBUTES = {key.name: "Keyword" for key in SEARCH_ATTRIBUTE_KEYS}
