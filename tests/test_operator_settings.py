"""The operator's configuration as the chart writes it into the environment."""

from __future__ import annotations

import pytest

from catalogsync.common.config import load
from catalogsync.common.errors import PermanentError
from catalogsync.operator.settings import OperatorSettings


def test_a_stage_block_changes_only_what_it_names() -> None:
    settings = load(
        OperatorSettings,
        CATALOGSYNC_MAINTAINER='{"backoffLimit": 0, "priorityClassName": "batch"}',
        CATALOGSYNC_NAMESPACES="a, b,",
    )
    assert settings.maintainer.backoff_limit == 0
    assert settings.maintainer.priority_class_name == "batch"
    assert settings.maintainer.resources["limits"]["memory"] == "8Gi"
    assert settings.maintainer.node_selector == {"catalogsync.io/cpu-class": "performance"}
    assert settings.namespaces == ["a", "b"]


def test_bad_configuration_names_the_variable() -> None:
    with pytest.raises(PermanentError, match="CATALOGSYNC_DATABASE_TABLE"):
        load(OperatorSettings, CATALOGSYNC_DATABASE_TABLE="Robert'); DROP TABLE")
    with pytest.raises(PermanentError, match="CATALOGSYNC_FETCHER"):
        load(OperatorSettings, CATALOGSYNC_FETCHER='{"backofLimit": 1}')


def test_stage_security_contexts_and_extra_volumes_are_settings() -> None:
    settings = load(
        OperatorSettings,
        CATALOGSYNC_FETCHER='{"podSecurityContext": {"runAsUser": null, "fsGroup": 3000},'
        ' "securityContext": {"capabilities": {"add": ["NET_BIND_SERVICE"]}},'
        ' "extraVolumes": [{"name": "ca", "configMap": {"name": "corporate-ca"}}],'
        ' "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/ssl/corporate"}]}',
    )
    assert settings.fetcher.pod_security_context == {"runAsUser": None, "fsGroup": 3000}
    assert settings.fetcher.security_context == {"capabilities": {"add": ["NET_BIND_SERVICE"]}}
    assert settings.fetcher.extra_volumes == [{"name": "ca", "configMap": {"name": "corporate-ca"}}]
    assert settings.fetcher.extra_volume_mounts[0]["mountPath"] == "/etc/ssl/corporate"
    assert settings.maintainer.pod_security_context == {}
    assert settings.maintainer.extra_volumes == []
