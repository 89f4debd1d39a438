"""Attribute names, span names and values (OpenTelemetry messaging conventions, plus ours).

Kept as plain strings so the plugin needs only ``opentelemetry-api``, not the (unstable)
semantic-conventions package.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "SCOPE",
    "SYSTEM",
    "MESSAGING_SYSTEM",
    "MESSAGING_DESTINATION_NAME",
    "MESSAGING_MESSAGE_ID",
    "MESSAGING_OPERATION_TYPE",
    "MESSAGING_OPERATION_NAME",
    "MESSAGING_BATCH_MESSAGE_COUNT",
    "MESSAGING_CLIENT_ID",
    "ERROR_TYPE",
    "JOB_NAME",
    "JOB_ATTEMPT",
    "JOB_OUTCOME",
    "TENANT",
    "CRON_ENTRY",
    "CRON_TICK",
    "WORKFLOW_NAME",
    "WORKFLOW_RUN_ID",
    "WORKFLOW_VERSION",
    "WORKFLOW_OUTCOME",
    "WORKFLOW_STEP",
    "WORKFLOW_STEP_ATTEMPT",
    "CRON_HEADER",
    "CRON_TICK_HEADER",
    "DRIVER_JOB",
]

#: The instrumentation scope of every tracer and meter the plugin makes.
SCOPE: Final = "dispatch_plugins.otel"
#: ``messaging.system`` of every span.
SYSTEM: Final = "dispatch"

MESSAGING_SYSTEM: Final = "messaging.system"
MESSAGING_DESTINATION_NAME: Final = "messaging.destination.name"
MESSAGING_MESSAGE_ID: Final = "messaging.message.id"
MESSAGING_OPERATION_TYPE: Final = "messaging.operation.type"
MESSAGING_OPERATION_NAME: Final = "messaging.operation.name"
MESSAGING_BATCH_MESSAGE_COUNT: Final = "messaging.batch.message_count"
MESSAGING_CLIENT_ID: Final = "messaging.client.id"
ERROR_TYPE: Final = "error.type"

JOB_NAME: Final = "dispatch.job.name"
JOB_ATTEMPT: Final = "dispatch.attempt"
JOB_OUTCOME: Final = "dispatch.job.outcome"
TENANT: Final = "dispatch.tenant"
CRON_ENTRY: Final = "dispatch.cron.entry"
CRON_TICK: Final = "dispatch.cron.tick"
WORKFLOW_NAME: Final = "dispatch.workflow.name"
WORKFLOW_RUN_ID: Final = "dispatch.workflow.run_id"
WORKFLOW_VERSION: Final = "dispatch.workflow.version"
WORKFLOW_OUTCOME: Final = "dispatch.workflow.outcome"
WORKFLOW_STEP: Final = "dispatch.workflow.step"
WORKFLOW_STEP_ATTEMPT: Final = "dispatch.workflow.step.attempt"

#: Headers dispatch-core stamps on the jobs a cron entry enqueues.
CRON_HEADER: Final = "dispatch-cron"
CRON_TICK_HEADER: Final = "dispatch-cron-tick"
#: The name of a workflow's driver jobs.
DRIVER_JOB: Final = "dispatch.workflow"
