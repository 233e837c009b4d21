"""The run creator's pure decisions: naming, classification of a firing, the CR body."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from catalogsync.common.errors import PermanentError
from catalogsync.operator import create_run
from catalogsync.operator.create_run import (
    MAX_NAME_LENGTH,
    SCHEDULED_TIMESTAMP_ANNOTATION,
    TEMPLATE_ENV,
    Firing,
    build_run,
    firing_from_job,
    parse_template,
    read_template,
    run_name,
)

NOW = datetime(2026, 3, 1, 2, 17, 45, tzinfo=UTC)


def cronjob_job(**annotations: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "catalogsync-sync-29537400",
            "uid": "6f1c5a52-2b1e-4a51-9d55-0c0f6b0c1e11",
            "creationTimestamp": "2026-03-01T02:00:03Z",
            "annotations": annotations,
            "ownerReferences": [
                {"apiVersion": "batch/v1", "kind": "CronJob", "name": "catalogsync-sync"}
            ],
        }
    }


def test_scheduled_firing_reads_the_cronjob_annotation_in_any_time_zone() -> None:
    job = cronjob_job(**{SCHEDULED_TIMESTAMP_ANNOTATION: "2026-03-01T13:00:00+11:00"})
    firing = firing_from_job(job, NOW)
    assert firing == Firing(
        "scheduled",
        datetime(2026, 3, 1, 2, 0, tzinfo=UTC),
        "catalogsync-sync",
        "catalogsync-sync-29537400",
        "6f1c5a52-2b1e-4a51-9d55-0c0f6b0c1e11",
    )
    assert run_name("medipim-au", firing) == "medipim-au-20260301-0200"


def test_same_slot_gives_same_name_so_a_retried_creator_is_harmless() -> None:
    first = firing_from_job(
        cronjob_job(**{SCHEDULED_TIMESTAMP_ANNOTATION: "2026-03-01T02:00:00Z"}), NOW
    )
    later = firing_from_job(
        cronjob_job(**{SCHEDULED_TIMESTAMP_ANNOTATION: "2026-03-01T02:00:00Z"}),
        datetime(2026, 3, 1, 2, 59, tzinfo=UTC),
    )
    assert run_name("x", first) == run_name("x", later) == "x-20260301-0200"


def test_kubectl_create_job_from_cronjob_is_manual_and_stable_per_job() -> None:
    job = cronjob_job(**{"cronjob.kubernetes.io/instantiate": "manual"})
    job["metadata"]["ownerReferences"] = []
    job["metadata"]["labels"] = {"catalogsync.io/schedule": "catalogsync-sync"}
    firing = firing_from_job(job, NOW)
    assert firing.trigger == "manual"
    assert firing.schedule == "catalogsync-sync"
    assert firing.time == datetime(2026, 3, 1, 2, 0, 3, tzinfo=UTC)
    name = run_name("medipim-au", firing)
    assert name.startswith("medipim-au-manual-20260301-0200-")
    assert name == run_name("medipim-au", firing)
    other = firing_from_job({**job, "metadata": {**job["metadata"], "uid": "another"}}, NOW)
    assert run_name("medipim-au", other) != name


def test_without_a_job_the_run_is_manual_with_a_random_suffix() -> None:
    firing = firing_from_job(None, NOW)
    assert firing == Firing("manual", NOW)
    names = {run_name("medipim-au", firing) for _ in range(5)}
    assert len(names) == 5
    assert all(n.startswith("medipim-au-manual-20260301-0217-") for n in names)
    assert run_name("p", firing, entropy="fixed") == run_name("p", firing, entropy="fixed")


@pytest.mark.parametrize("trigger", ["scheduled", "manual"])
def test_long_prefixes_are_cut_to_the_crd_name_limit(trigger: Any) -> None:
    prefix = "a" * 40 + "-" + "b" * 30
    name = run_name(prefix, Firing(trigger, NOW, job_uid="u"))
    assert len(name) <= MAX_NAME_LENGTH
    assert "--" not in name
    assert name[0].isalnum()
    assert name[-1].isalnum()


@pytest.mark.parametrize("prefix", ["Upper", "-lead", "trail-", "under_score", ""])
def test_invalid_prefix_is_a_permanent_error_naming_the_fix(prefix: str) -> None:
    with pytest.raises(PermanentError, match="prefix"):
        run_name(prefix, Firing("manual", NOW))


def test_build_run_keeps_the_template_and_adds_identity() -> None:
    template: dict[str, Any] = {
        "metadata": {"labels": {"team": "data"}, "annotations": {"note": "kept"}},
        "spec": {"catalog": "medipim-au", "maintainer": {"chunkSize": 1000}},
    }
    firing = Firing("scheduled", datetime(2026, 3, 1, 2, 0, tzinfo=UTC), "cs", "cs-1", "uid")
    body = build_run(template, firing, "medipim-au-20260301-0200", "sync")
    assert body == {
        "apiVersion": "catalogsync.io/v1alpha1",
        "kind": "CatalogSync",
        "metadata": {
            "name": "medipim-au-20260301-0200",
            "namespace": "sync",
            "labels": {
                "team": "data",
                "catalogsync.io/trigger": "scheduled",
                "catalogsync.io/schedule": "cs",
            },
            "annotations": {
                "note": "kept",
                "catalogsync.io/scheduled-time": "2026-03-01T02:00:00Z",
                "catalogsync.io/created-by-job": "cs-1",
            },
        },
        "spec": {"catalog": "medipim-au", "maintainer": {"chunkSize": 1000}},
    }
    assert template["metadata"]["labels"] == {"team": "data"}, "the template is not mutated"


def test_build_run_of_a_bare_manual_run_has_an_empty_spec() -> None:
    body = build_run({}, Firing("manual", NOW), "n", "ns")
    assert body["spec"] == {}
    assert body["metadata"]["labels"] == {"catalogsync.io/trigger": "manual"}
    assert body["metadata"]["annotations"] == {}


def test_template_comes_from_a_file_or_the_environment(tmp_path: Path) -> None:
    manifest = "apiVersion: catalogsync.io/v1alpha1\nkind: CatalogSync\nspec: {mode: Full}\n"
    good = tmp_path / "run.yaml"
    good.write_text(manifest)
    assert read_template(str(good), {TEMPLATE_ENV: "ignored"}) == (manifest, str(good))
    assert read_template(None, {TEMPLATE_ENV: manifest}) == (manifest, TEMPLATE_ENV)
    with pytest.raises(PermanentError, match="cannot read the run template"):
        read_template(str(tmp_path / "missing.yaml"), {})
    with pytest.raises(PermanentError, match=f"set {TEMPLATE_ENV}"):
        read_template(None, {TEMPLATE_ENV: "  "})


def test_parse_template_accepts_a_manifest_or_json_and_rejects_names() -> None:
    text = "apiVersion: catalogsync.io/v1alpha1\nkind: CatalogSync\nspec: {mode: Full}\n"
    assert parse_template(text, "t")["spec"] == {"mode": "Full"}
    assert parse_template('{"spec": {"catalog": "x"}}', "t") == {"spec": {"catalog": "x"}}
    assert parse_template("", "t") == {}
    with pytest.raises(PermanentError, match="named from their scheduled time"):
        parse_template("metadata: {name: fixed}\nspec: {}\n", "t")
    with pytest.raises(PermanentError, match=r"must be a catalogsync\.io/v1alpha1 CatalogSync"):
        parse_template("apiVersion: v1\nkind: ConfigMap\n", "t")
    with pytest.raises(PermanentError, match="not valid YAML"):
        parse_template("spec: [", "t")
    with pytest.raises(PermanentError, match="must be a mapping"):
        parse_template("- a\n- b\n", "t")


def test_main_reports_a_missing_template_as_a_permanent_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TEMPLATE_ENV, raising=False)
    assert create_run.main(["--template", str(tmp_path / "nope.yaml"), "--log-format", "text"]) == 2
    assert create_run.main(["--log-format", "text"]) == 2


def test_dry_run_without_a_job_prints_the_run_and_needs_no_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    monkeypatch.delenv("JOB_NAME", raising=False)
    monkeypatch.setenv(TEMPLATE_ENV, "spec: {mode: MaintainOnly}\n")
    argv = ["--dry-run", "--namespace", "sync", "--prefix", "nightly", "--log-format", "text"]
    assert create_run.main(argv) == 0
    body = yaml.safe_load(capsys.readouterr().out)
    assert body["metadata"]["namespace"] == "sync"
    assert body["metadata"]["name"].startswith("nightly-manual-")
    assert body["metadata"]["labels"] == {"catalogsync.io/trigger": "manual"}
    assert body["spec"] == {"mode": "MaintainOnly"}
