"""Stage pod settings that the API server would refuse, found before any Job exists."""

from __future__ import annotations

from typing import Any

import pytest

from catalogsync.operator.pod_settings import problems
from catalogsync.operator.settings import StagePod, default_fetcher, default_maintainer


def stage(**settings: Any) -> StagePod:
    return StagePod.model_validate(settings)


def test_the_defaults_are_valid() -> None:
    assert problems("fetcher", default_fetcher()) == []
    assert problems("maintainer", default_maintainer()) == []


def test_a_request_above_its_limit_is_named_with_both_values() -> None:
    pod = stage(resources={"requests": {"memory": "1025Mi", "cpu": "100m"},
                           "limits": {"memory": "1Gi", "cpu": "0.1"}})  # fmt: skip
    assert problems("maintainer", pod) == [
        "maintainer pod: resources.requests.memory (1025Mi) is more than resources.limits.memory "
        "(1Gi); lower the request or raise the limit; fix spec.maintainer.resources (or the "
        "operator's default, Helm value maintainer.resources)"
    ]


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ({"resources": {"limits": {"memory": "8 GB"}}}, "resources.limits.memory: '8 GB' is not"),
        ({"resources": {"requests": {"cpu": -1}}}, "resources.requests.cpu: -1 is negative"),
        ({"resources": {"limit": {"cpu": "1"}}}, "resources: unknown key 'limit'"),
        ({"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]},
         "tolerations[0]: operator Exists takes no value"),
        ({"tolerations": [{"operator": "Equal", "value": "v"}]},
         "tolerations[0]: an empty key needs operator Exists"),
        ({"tolerations": [{"key": "k", "effect": "NoSchedule", "tolerationSeconds": 60}]},
         "tolerations[0]: tolerationSeconds needs effect NoExecute"),
    ],
)  # fmt: skip
def test_statically_invalid_settings_are_named(settings: dict[str, Any], complaint: str) -> None:
    found = problems("fetcher", stage(**settings))
    assert len(found) == 1
    assert found[0].startswith("fetcher pod: ")
    assert complaint in found[0]


def test_an_extra_volume_may_not_take_the_scratch_volumes_name_or_path() -> None:
    found = problems(
        "maintainer",
        stage(
            extra_volumes=[{"name": "scratch", "emptyDir": {}}],
            extra_volume_mounts=[{"name": "ca", "mountPath": "/tmp"}],
        ),
    )
    assert len(found) == 2, found
    assert "extraVolumes[0]: the name 'scratch' is the built-in /tmp volume" in found[0]
    assert "Helm value maintainer.extraVolumes" in found[0]
    assert "extraVolumeMounts[0]: mountPath /tmp is the built-in scratch volume" in found[1]
    assert problems("fetcher", stage(extra_volumes=[{"name": "ca", "secret": {}}])) == []
