"""Pydantic models of the declared documents: the single source of truth for the format.

`schemas/` is generated from here (`reconciler schema`). Document classes by
apiVersion live in `versions`; the kinds themselves in `kinds`; tasks in `tasks`;
what the controller writes back about each resource (conditions, phase, last
applied) in `status`.

Enters: nothing of the flow; it is the format every step reads. Leaves: the
document classes (`kinds`, `tasks`, `common`, `versions`) and the status values
(`status`). May import only
`reconciler.errors`; the JSON Schemas are written by `reconciler.cli.schema`,
which also needs the plan and status values.
"""

from reconciler.model.common import (
    Duration,
    Metadata,
    RetryPolicy,
    SecretRef,
    Selector,
    is_secret_ref,
    parse_duration,
)
from reconciler.model.kinds import (
    API_VERSION,
    RESOURCE_KINDS,
    Bmc,
    ChangeWindow,
    Document,
    Hooks,
    IgnoreRule,
    Input,
    Instance,
    Machine,
    ManagedObject,
    Pipeline,
    PipelineStep,
    Policy,
    Profile,
    Provider,
    Resource,
    Stage,
)
from reconciler.model.tasks import (
    TASK_TYPES,
    AnsibleTask,
    CommandTask,
    HttpTask,
    NotifyTask,
    ProviderActionTask,
    Task,
    WaitForTask,
)
from reconciler.model.versions import HUB_VERSION, KINDS, SUPPORTED_VERSIONS, document_class

__all__ = [
    "API_VERSION",
    "HUB_VERSION",
    "KINDS",
    "RESOURCE_KINDS",
    "SUPPORTED_VERSIONS",
    "TASK_TYPES",
    "AnsibleTask",
    "Bmc",
    "ChangeWindow",
    "CommandTask",
    "Document",
    "Duration",
    "Hooks",
    "HttpTask",
    "IgnoreRule",
    "Input",
    "Instance",
    "Machine",
    "ManagedObject",
    "Metadata",
    "NotifyTask",
    "Pipeline",
    "PipelineStep",
    "Policy",
    "Profile",
    "Provider",
    "ProviderActionTask",
    "Resource",
    "RetryPolicy",
    "SecretRef",
    "Selector",
    "Stage",
    "Task",
    "WaitForTask",
    "document_class",
    "is_secret_ref",
    "parse_duration",
]
