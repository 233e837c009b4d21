"""The chart's monitoring: the metrics endpoint and Service, the Prometheus Operator objects, the
alert rules (checked and unit-tested by the real promtool) and the Grafana dashboard."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from catalogsync.operator.metrics import exported_names
from tests.chart import CHART, Helm, Manifest, find, helm_binary, one, promtool_binary

EVERYTHING = {
    "monitoring": {
        "service": {"enabled": True},
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "podMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True, "labels": {"role": "alert-rules"}},
        "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "Catalogs"}},
    }
}
OPERATOR_POD = {"app.kubernetes.io/component": "operator"}


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(helm_binary(), tmp_path_factory.mktemp("helm"))


@pytest.fixture(scope="module")
def everything(helm: Helm) -> list[Manifest]:
    return helm.template(EVERYTHING, namespace="sync")


def operator_container(manifests: list[Manifest]) -> dict[str, Any]:
    deployment = one(manifests, "Deployment", "-operator")
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def test_the_endpoint_is_on_by_default_and_nothing_else(helm: Helm) -> None:
    manifests = helm.template(namespace="sync")
    config = one(manifests, "ConfigMap", "-operator")["data"]
    assert config["CATALOGSYNC_METRICS_PORT"] == "9110"
    ports = {p["name"]: p["containerPort"] for p in operator_container(manifests)["ports"]}
    assert ports["metrics"] == 9110
    kinds = {m["kind"] for m in manifests}
    assert not kinds & {"Service", "ServiceMonitor", "PodMonitor", "PrometheusRule"}
    assert not find(manifests, "ConfigMap", "-dashboard")
    # Only Prometheus' port opens in the deny-all ingress policy.
    policy = one(manifests, "NetworkPolicy", "-metrics")
    assert policy["spec"]["podSelector"]["matchLabels"].items() >= OPERATOR_POD.items()
    assert policy["spec"]["ingress"] == [{"ports": [{"port": "metrics", "protocol": "TCP"}]}]


def test_monitoring_off_turns_the_endpoint_off(helm: Helm) -> None:
    manifests = helm.template({"monitoring": {"enabled": False, **EVERYTHING["monitoring"]}})
    config = one(manifests, "ConfigMap", "-operator")["data"]
    assert config["CATALOGSYNC_METRICS_PORT"] == "0"
    assert "metrics" not in {p["name"] for p in operator_container(manifests)["ports"]}
    kinds = {m["kind"] for m in manifests}
    assert not kinds & {"Service", "ServiceMonitor", "PodMonitor", "PrometheusRule"}
    assert not find(manifests, "NetworkPolicy", "-metrics")


def test_service_and_monitors_select_the_operator_metrics_port(
    everything: list[Manifest],
) -> None:
    pod = one(everything, "Deployment", "-operator")["spec"]["template"]["metadata"]["labels"]
    service = one(everything, "Service", "-metrics")
    assert service["spec"]["selector"].items() <= pod.items()
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9110, "targetPort": "metrics", "protocol": "TCP"}
    ]
    monitor = one(everything, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["sync"]}
    (endpoint,) = monitor["spec"]["endpoints"]
    # The series name the run's namespace; the target's namespace must not overwrite it.
    assert endpoint["port"] == "metrics"
    assert endpoint["honorLabels"] is True
    pod_monitor = one(everything, "PodMonitor")
    assert pod_monitor["spec"]["selector"]["matchLabels"].items() <= pod.items()
    (endpoint,) = pod_monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics"
    assert endpoint["honorLabels"] is True


def test_allow_from_limits_who_may_scrape(helm: Helm) -> None:
    peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    manifests = helm.template({"monitoring": {"allowFrom": [peer]}})
    (rule,) = one(manifests, "NetworkPolicy", "-metrics")["spec"]["ingress"]
    assert rule["from"] == [peer]


def test_the_schema_rejects_unknown_monitoring_values(helm: Helm) -> None:
    result = helm.run(
        "template", "cs", str(CHART), "--set", "monitoring.prometheusRule.noSuchThing=1",
        check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "noSuchThing" in result.stderr


# --- the dashboard ---------------------------------------------------------------------------


def dashboard_exprs(board: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])]


def test_dashboard_is_a_sidecar_configmap_of_valid_json_using_only_exported_metrics(
    everything: list[Manifest],
) -> None:
    config_map = one(everything, "ConfigMap", "-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "Catalogs"}
    board = json.loads(config_map["data"]["catalogsync.json"])
    assert board["uid"] == "catalogsync"
    assert board["panels"], "a dashboard with panels"
    exported = exported_names()
    used: set[str] = set()
    for panel in board["panels"]:
        exprs = [target["expr"] for target in panel["targets"]]
        assert exprs, f"panel {panel['title']!r} has no query"
        for expr in exprs:
            names = set(re.findall(r"\bcatalogsync_[a-z_]+", expr))
            assert names, f"panel {panel['title']!r} queries no catalogsync metric: {expr}"
            assert names <= exported, f"{panel['title']!r} uses unknown {names - exported}"
            used |= names
    for variable in board["templating"]["list"]:
        names = set(re.findall(r"\bcatalogsync_[a-z_]+", json.dumps(variable)))
        assert names <= exported
    # Every kind of metric the operator exports is on the dashboard.
    bases = {re.sub(r"_(bucket|sum|count)$", "", name) for name in used}
    families = {n for n in exported if not n.endswith(("_bucket", "_sum", "_count", "_created"))}
    families |= {n.removesuffix("_bucket") for n in exported if n.endswith("_bucket")}
    assert families <= bases, f"not on the dashboard: {families - bases}"


def test_dashboard_can_go_to_grafanas_namespace(helm: Helm) -> None:
    values = {"monitoring": {"grafanaDashboard": {"enabled": True, "namespace": "grafana"}}}
    config_map = one(helm.template(values), "ConfigMap", "-dashboard")
    assert config_map["metadata"]["namespace"] == "grafana"


# --- the alert rules -------------------------------------------------------------------------


def rule_groups(manifests: list[Manifest]) -> dict[str, Any]:
    spec: dict[str, Any] = one(manifests, "PrometheusRule")["spec"]
    return spec


def alert_names(groups: dict[str, Any]) -> set[str]:
    return {rule["alert"] for group in groups["groups"] for rule in group["rules"]}


def test_rules_use_only_exported_metrics(everything: list[Manifest]) -> None:
    groups = rule_groups(everything)
    assert alert_names(groups) == {
        "CatalogSyncNoRecentSuccess",
        "CatalogSyncNoSuccessReported",
        "CatalogSyncRunFailed",
        "CatalogSyncDeletionsRefused",
        "CatalogSyncRunSlow",
    }
    for group in groups["groups"]:
        for rule in group["rules"]:
            names = set(re.findall(r"\bcatalogsync_[a-z_]+", rule["expr"]))
            assert names, rule["alert"]
            assert names <= exported_names(), rule["alert"]


def test_rule_values_reach_the_rules(helm: Helm) -> None:
    values = {
        "monitoring": {
            "prometheusRule": {
                "enabled": True,
                "selector": 'job="catalogsync-metrics"',
                "noSuccessForSeconds": 7200,
                "slowRun": {"factor": 3, "baseline": "14d", "minimumSeconds": 60},
                "severity": {"runFailed": "critical"},
            }
        }
    }
    rules = {
        r["alert"]: r for g in rule_groups(helm.template(values))["groups"] for r in g["rules"]
    }
    assert rules["CatalogSyncNoRecentSuccess"]["expr"] == (
        'time() - catalogsync_last_success_timestamp_seconds{job="catalogsync-metrics"} > 7200'
    )
    assert (
        'reason!="TooManyDeletes",job="catalogsync-metrics"'
        in rules["CatalogSyncRunFailed"]["expr"]
    )
    assert rules["CatalogSyncRunFailed"]["labels"]["severity"] == "critical"
    slow = rules["CatalogSyncRunSlow"]["expr"]
    assert "[14d]) * 3" in slow
    assert "60\n" in slow


@pytest.fixture(scope="module")
def promtool() -> Path:
    return promtool_binary()


def run_promtool(promtool: Path, *args: str, cwd: Path) -> str:
    result = subprocess.run(
        [str(promtool), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_promtool_checks_the_rendered_rules(
    promtool: Path, everything: list[Manifest], tmp_path: Path
) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_groups(everything)))
    output = run_promtool(promtool, "check", "rules", "rules.yaml", cwd=tmp_path)
    assert "SUCCESS: 5 rules found" in output


SYNC = {"namespace": "sync", "catalog": "medipim-au"}


def series(name: str, values: str, **labels: str) -> dict[str, str]:
    body = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"catalogsync_{name}{{{body}}}", "values": values}


def alert(name: str, at: str, *expected: dict[str, Any]) -> dict[str, Any]:
    return {"eval_time": at, "alertname": name, "exp_alerts": list(expected)}


def fired(summary: str, **labels: str) -> dict[str, Any]:
    return {"exp_labels": labels, "exp_annotations": {"summary": summary}}


RULE_TESTS: list[dict[str, Any]] = [
    {
        "name": "no success for longer than the limit (26 h)",
        "interval": "1m",
        "input_series": [series("last_success_timestamp_seconds", "0x1700", **SYNC)],
        "alert_rule_test": [
            alert("CatalogSyncNoRecentSuccess", "25h"),
            alert(
                "CatalogSyncNoRecentSuccess",
                "26h10m",
                fired(
                    "Catalog medipim-au has not synced successfully for 1d 2h 10m 0s.",
                    severity="critical",
                    **SYNC,
                ),
            ),
            alert("CatalogSyncNoSuccessReported", "26h10m"),
        ],
    },
    {
        "name": "nothing reported at all",
        "interval": "1m",
        "input_series": [{"series": 'up{job="other"}', "values": "1x1700"}],
        "alert_rule_test": [
            alert("CatalogSyncNoSuccessReported", "25h"),
            alert(
                "CatalogSyncNoSuccessReported",
                "26h10m",
                fired(
                    "No catalog has reported a successful sync for 93600 seconds.",
                    severity="critical",
                ),
            ),
        ],
    },
    {
        "name": "a failed run alerts until the next success; a first run's failure alerts too",
        "interval": "1m",
        "input_series": [
            series("last_success_timestamp_seconds", "0x19 1200x20", **SYNC),
            series(
                "last_failure_timestamp_seconds",
                "_x9 600x30",
                **SYNC,
                stage="fetcher",
                reason="InvalidCredentials",
            ),
            series(
                "last_failure_timestamp_seconds",
                "60x40",
                namespace="sync",
                catalog="new",
                stage="maintainer",
                reason="TableLocked",
            ),
        ],
        "alert_rule_test": [
            alert(
                "CatalogSyncRunFailed",
                "5m",
                fired(
                    "The last run of catalog new failed in the maintainer with TableLocked.",
                    severity="warning",
                    namespace="sync",
                    catalog="new",
                    stage="maintainer",
                    reason="TableLocked",
                ),
            ),
            alert(
                "CatalogSyncRunFailed",
                "15m",
                fired(
                    "The last run of catalog medipim-au failed in the fetcher with "
                    "InvalidCredentials.",
                    severity="warning",
                    stage="fetcher",
                    reason="InvalidCredentials",
                    **SYNC,
                ),
                fired(
                    "The last run of catalog new failed in the maintainer with TableLocked.",
                    severity="warning",
                    namespace="sync",
                    catalog="new",
                    stage="maintainer",
                    reason="TableLocked",
                ),
            ),
            alert("CatalogSyncDeletionsRefused", "15m"),
        ],
    },
    {
        "name": "a success clears the failed-run alert",
        "interval": "1m",
        "input_series": [
            series("last_success_timestamp_seconds", "0x19 1200x20", **SYNC),
            series(
                "last_failure_timestamp_seconds",
                "600x40",
                **SYNC,
                stage="fetcher",
                reason="InvalidCredentials",
            ),
        ],
        "alert_rule_test": [alert("CatalogSyncRunFailed", "25m")],
    },
    {
        "name": "the deletion guard has an alert of its own",
        "interval": "1m",
        "input_series": [
            series("last_success_timestamp_seconds", "0x40", **SYNC),
            series(
                "last_failure_timestamp_seconds",
                "600x40",
                **SYNC,
                stage="maintainer",
                reason="TooManyDeletes",
            ),
        ],
        "alert_rule_test": [
            alert(
                "CatalogSyncDeletionsRefused",
                "15m",
                fired(
                    "The deletion guard stopped the last run of catalog medipim-au.",
                    severity="warning",
                    stage="maintainer",
                    reason="TooManyDeletes",
                    **SYNC,
                ),
            ),
            alert("CatalogSyncRunFailed", "15m"),
        ],
    },
    {
        "name": "a run slower than twice the usual, and at least 30 minutes",
        "interval": "1m",
        "input_series": [
            series("last_success_duration_seconds", "600x120", **SYNC),
            series("active_run_start_timestamp_seconds", "_x59 3600x60", **SYNC),
            series("last_success_duration_seconds", "3000x120", namespace="sync", catalog="big"),
            series(
                "active_run_start_timestamp_seconds",
                "_x59 3600x60",
                namespace="sync",
                catalog="big",
            ),
        ],
        "alert_rule_test": [
            alert("CatalogSyncRunSlow", "85m"),
            alert(
                "CatalogSyncRunSlow",
                "95m",
                fired(
                    "The run of catalog medipim-au has taken 35m 0s, more than 2 times its "
                    "usual time.",
                    severity="warning",
                    **SYNC,
                ),
            ),
        ],
    },
]


def test_promtool_unit_tests_the_rendered_rules(
    promtool: Path, everything: list[Manifest], tmp_path: Path
) -> None:
    groups = rule_groups(everything)
    for group in groups["groups"]:
        for rule in group["rules"]:
            # The long description is prose; the summary (asserted) carries the values.
            rule["annotations"].pop("description")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(groups))
    tests = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": RULE_TESTS}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    output = run_promtool(promtool, "test", "rules", "tests.yaml", cwd=tmp_path)
    assert "SUCCESS" in output
