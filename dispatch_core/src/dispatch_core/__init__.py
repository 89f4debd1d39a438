"""Dispatch: durable background jobs, workflows and cron for Python.

The public API is re-exported here; submodules hold the details.
"""

from __future__ import annotations

import importlib.metadata

from dispatch_core._naming import default_name
from dispatch_core.backoff import Backoff, Constant, Exponential, ExponentialJitter, Linear
from dispatch_core.cluster import WorkerInfo, WorkerState
from dispatch_core.context import JobContext, current_job, current_tenant, tenant_scope
from dispatch_core.cron import CronEntry, CronSchedule, MisfirePolicy
from dispatch_core.definition import JobDefinition
from dispatch_core.engine import Engine
from dispatch_core.errors import (
    ConfigurationError,
    CronExpressionError,
    CronNotFoundError,
    DispatchError,
    DLQEntryNotFoundError,
    FailJob,
    InvalidTransitionError,
    JobIdTakenError,
    JobNotFoundError,
    JobTimeoutError,
    NotFoundError,
    PayloadError,
    PluginMissingError,
    ResultError,
    RetryJob,
    RunNotFoundError,
    StoreUnavailableError,
    StoreURLError,
    SyncInAsyncContextError,
    UnknownJobError,
)
from dispatch_core.hookspecs import hookimpl
from dispatch_core.middleware import CallNext, Middleware, MiddlewareRegistry
from dispatch_core.models import (
    DLQEntry,
    DLQFilter,
    Job,
    JobFilter,
    NewJob,
    Outcome,
    OutcomeKind,
    RunnableCount,
    SortOrder,
    ThroughputBucket,
    Truncated,
)
from dispatch_core.operations import Operations
from dispatch_core.producer import EnqueueOptions
from dispatch_core.queues import QueueConfig, QueueStats
from dispatch_core.registry import StoreRegistry
from dispatch_core.retention import Retention
from dispatch_core.scheduling import CronSpec
from dispatch_core.states import JobState
from dispatch_core.store import PruneCutoffs, Store, SyncStore
from dispatch_core.worker import DrainResult, Worker, WorkerStats
from dispatch_core.workflows.definition import RunHandle, WorkflowDefinition
from dispatch_core.workflows.errors import (
    ChildWorkflowFailedError,
    EventTimeoutError,
    NonDeterminismError,
    StepFailedError,
    WorkflowCancelledError,
    WorkflowError,
    WorkflowFailedError,
)
from dispatch_core.workflows.models import RunState, StepKind, StepRecord, StepState, WorkflowRun
from dispatch_core.workflows.runtime import StepRetry, Workflow

__version__ = importlib.metadata.version("dispatch-core")

__all__ = [
    "__version__",
    # engine and jobs
    "Engine",
    "Operations",
    "JobDefinition",
    "EnqueueOptions",
    "default_name",
    "JobContext",
    "current_job",
    "current_tenant",
    "tenant_scope",
    "DLQFilter",
    "SortOrder",
    "ThroughputBucket",
    "RunnableCount",
    "Worker",
    "WorkerStats",
    "DrainResult",
    # values
    "Job",
    "JobState",
    "JobFilter",
    "NewJob",
    "Outcome",
    "OutcomeKind",
    "DLQEntry",
    "Truncated",
    # the cluster
    "WorkerInfo",
    "WorkerState",
    "CronEntry",
    "CronSchedule",
    "CronSpec",
    "MisfirePolicy",
    "QueueConfig",
    "QueueStats",
    "Retention",
    "PruneCutoffs",
    # workflows
    "Workflow",
    "WorkflowDefinition",
    "RunHandle",
    "WorkflowRun",
    "RunState",
    "StepRecord",
    "StepKind",
    "StepState",
    "StepRetry",
    # retries
    "Backoff",
    "Constant",
    "Linear",
    "Exponential",
    "ExponentialJitter",
    # plugins and stores
    "hookimpl",
    "Store",
    "SyncStore",
    "StoreRegistry",
    "Middleware",
    "MiddlewareRegistry",
    "CallNext",
    # errors
    "DispatchError",
    "ConfigurationError",
    "StoreURLError",
    "PluginMissingError",
    "StoreUnavailableError",
    "PayloadError",
    "ResultError",
    "UnknownJobError",
    "NotFoundError",
    "CronNotFoundError",
    "CronExpressionError",
    "RunNotFoundError",
    "WorkflowError",
    "NonDeterminismError",
    "StepFailedError",
    "ChildWorkflowFailedError",
    "EventTimeoutError",
    "WorkflowFailedError",
    "WorkflowCancelledError",
    "JobNotFoundError",
    "DLQEntryNotFoundError",
    "InvalidTransitionError",
    "JobIdTakenError",
    "SyncInAsyncContextError",
    "JobTimeoutError",
    "RetryJob",
    "FailJob",
]
