"""Every reason a run can fail with: the one vocabulary of ``status.failure.reason``.

The jobs raise :class:`~catalogsync.common.errors.SyncError` with one of these, write it into
their termination message, and the operator copies it into ``status.failure.reason``; the operator
adds its own (``SecretNotFound``, ``JobRejected``, ...) and passes on the Job's and the kubelet's
(``OOMKilled``, ``DeadlineExceeded``, ``BackoffLimitExceeded``). ``catalogsync create-run`` exits
with some of them too. A :class:`~enum.StrEnum`, so each member *is* its string: code that still
writes ``"TableLocked"`` compares equal, and the JSON is unchanged. docs/operations.md explains
every one of them (``tests/test_contract.py`` checks it, and that the code uses no other).
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Member names are their values, so a reason reads the same in code, status and docs."""

    # Configuration and credentials (exit code 2: no retry)
    InvalidConfiguration = "InvalidConfiguration"
    SecretNotFound = "SecretNotFound"
    InvalidSecret = "InvalidSecret"
    SecretKeyMissing = "SecretKeyMissing"
    InvalidCredentials = "InvalidCredentials"
    InvalidRequest = "InvalidRequest"

    # The MediPim stream
    SourceUnavailable = "SourceUnavailable"
    IncompleteStream = "IncompleteStream"
    StreamStalled = "StreamStalled"
    StreamTimeout = "StreamTimeout"
    StreamError = "StreamError"

    # Storage
    StorageUnavailable = "StorageUnavailable"
    StorageRejected = "StorageRejected"
    BucketNotFound = "BucketNotFound"
    UploadIncomplete = "UploadIncomplete"
    PublishFailed = "PublishFailed"
    ObjectTooLarge = "ObjectTooLarge"
    ObjectNotFound = "ObjectNotFound"
    ObjectChanged = "ObjectChanged"
    # Reaching the database
    DatabaseUnavailable = "DatabaseUnavailable"
    DatabaseTLSUnavailable = "DatabaseTLSUnavailable"
    InsufficientPrivilege = "InsufficientPrivilege"

    # The data and the database
    InvalidData = "InvalidData"
    CatalogShrunk = "CatalogShrunk"
    TooManyInvalidLines = "TooManyInvalidLines"
    TooManyDeletes = "TooManyDeletes"
    TableLocked = "TableLocked"

    # Kubernetes: the operator's own findings, then the kubelet's and the Job's
    JobRejected = "JobRejected"
    PodCreationFailed = "PodCreationFailed"
    Unschedulable = "Unschedulable"
    JobLost = "JobLost"
    OOMKilled = "OOMKilled"
    DeadlineExceeded = "DeadlineExceeded"
    BackoffLimitExceeded = "BackoffLimitExceeded"
    Interrupted = "Interrupted"
    """SIGTERM (pod deleted, evicted, node drained); the next attempt resumes."""
    # Reaching the Kubernetes API (the operator and create-run outside a pod)
    NoKubeConfig = "NoKubeConfig"
    InvalidKubeConfig = "InvalidKubeConfig"
    ApiServerUnavailable = "ApiServerUnavailable"

    # catalogsync create-run, against the API server
    Forbidden = "Forbidden"
    NotFound = "NotFound"
    InvalidTemplate = "InvalidTemplate"
    ApiError = "ApiError"

    Error = "Error"
    """Nothing more specific is known; the message holds the exception or the log tail."""
