"""The reconcile loop's orchestration, against an in-memory cluster: no API server, milliseconds.

:func:`decide` is tested on its own (test_operator_decide.py); these tests cover what the loop
adds around it: the second pass for Secrets, the fallback when a Job is refused, adoption after a
409, the order of effects, and pruning and notifying exactly once per run. What needs the real
API (RBAC, watches, the Job controller) stays in test_operator_kube.py.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from typing import Any

import pytest

from catalogsync.operator.jobs import RUN_LABEL
from catalogsync.operator.reconciler import Reconciler
from tests.memory_cluster import MemoryCluster, secret_data
from tests.operator_objects import NOW, cr, job, pod, settings

MAINTAINED = {"stage": "maintainer", "ok": True, "total": 20, "processed": 20, "inserted": 5,
              "updated": 3, "skipped": 12, "deleted": 0, "invalid": 0, "chunksDone": 1}  # fmt: skip
FETCHED_CONDITION = {"type": "Fetched", "status": "True", "reason": "FetchSucceeded",
                     "message": "", "lastTransitionTime": "2026-05-01T11:57:00Z"}  # fmt: skip


class Harness:
    """A reconciler on a :class:`MemoryCluster`, with the hook calls it made."""

    def __init__(self, **config: Any) -> None:
        self.cluster = MemoryCluster()
        self.settings = settings(**config)
        self.finished: list[Mapping[str, Any]] = []
        self.reconciler = Reconciler(
            self.cluster,
            self.settings,
            finished_hooks=[self.finished.append],
            clock=lambda: NOW,
            instance="test",
        )

    def add_secrets(self, *, database_url: str = "postgresql://u:p@127.0.0.1:1/db") -> None:
        s = self.settings
        self.cluster.add_secret(
            "ns", s.medipim_credentials_secret, secret_data(apiKeyId="id", apiKeySecret="secret")
        )
        self.cluster.add_secret(
            "ns", s.storage_credentials_secret, secret_data(serviceRoleKey="key")
        )
        self.cluster.add_secret("ns", s.database_credentials_secret, secret_data(url=database_url))

    async def reconcile(self, name: str = "run-1") -> dict[str, Any]:
        await self.reconciler.reconcile("ns", name)
        return self.cluster.runs.get(("ns", name), {})

    def reasons(self) -> list[str]:
        return [e["reason"] for e in self.cluster.events]


def labelled(obj: dict[str, Any], run: str = "run-1") -> dict[str, Any]:
    obj["metadata"].setdefault("labels", {})[RUN_LABEL] = run
    return obj


def owned_pod(owner: Mapping[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    body = labelled(pod(*args, **kwargs))
    body["metadata"]["ownerReferences"] = [{"uid": owner["metadata"]["uid"], "kind": "Job"}]
    return body


def maintaining() -> Harness:
    """A run whose maintainer has just succeeded: the next reconcile ends it."""
    h = Harness()
    status = {
        "phase": "Maintaining",
        "startTime": "2026-05-01T11:55:48Z",
        "conditions": [FETCHED_CONDITION],
        "fetcher": {"jobName": "run-1-fetcher", "records": 20},
        "maintainer": {"jobName": "run-1-maintainer"},
    }
    h.cluster.add_run(cr(status=status))
    fetcher = h.cluster.add_job(labelled(
        job("run-1-fetcher", conditions=[("Complete", "")], active=0, succeeded=1)))  # fmt: skip
    maintainer = h.cluster.add_job(labelled(
        job("run-1-maintainer", conditions=[("Complete", "")], active=0, succeeded=1)))  # fmt: skip
    h.cluster.add_pod(owned_pod(fetcher, "run-1-fetcher-a", "fetcher", phase="Succeeded",
                                exit_code=0, message={"stage": "fetcher", "ok": True}))  # fmt: skip
    h.cluster.add_pod(owned_pod(maintainer, "run-1-maintainer-a", "maintainer",
                                phase="Succeeded", exit_code=0, message=MAINTAINED))  # fmt: skip
    return h


# -- the second pass for Secrets


async def test_a_new_run_reads_its_secrets_then_creates_the_fetcher_job() -> None:
    h = Harness()
    h.add_secrets()
    h.cluster.add_run(cr())
    body = await h.reconcile()
    assert body["status"]["phase"] == "Fetching"
    assert ("ns", "run-1-fetcher") in h.cluster.jobs
    # Every Secret is read once, after the first decision asked for them, before the Job.
    reads = [c for c in h.cluster.calls if c == "read_secret_data"]
    assert len(reads) == 3
    assert h.cluster.calls.index("read_secret_data") < h.cluster.calls.index("create_job")
    assert h.reasons() == ["FetcherJobCreated"]


async def test_a_missing_secret_fails_the_run_without_creating_a_job() -> None:
    h = Harness()
    h.cluster.add_run(cr())
    body = await h.reconcile()
    assert body["status"]["phase"] == "Failed"
    assert body["status"]["failure"]["reason"] == "SecretNotFound"
    assert h.settings.medipim_credentials_secret in body["status"]["failure"]["message"]
    assert not h.cluster.jobs
    assert "create_job" not in h.cluster.calls
    assert len(h.finished) == 1


async def test_a_running_run_does_not_read_secrets_again() -> None:
    h = Harness()
    h.add_secrets()
    h.cluster.add_run(cr())
    await h.reconcile()
    h.cluster.calls.clear()
    await h.reconcile()
    assert "read_secret_data" not in h.cluster.calls
    assert "create_job" not in h.cluster.calls


# -- the fallback when a Job is refused


async def test_a_refused_job_fails_the_run_with_the_api_servers_reason() -> None:
    h = Harness()
    h.add_secrets()
    h.cluster.add_run(cr())
    h.cluster.refuse_jobs["run-1-fetcher"] = 'jobs.batch "run-1-fetcher" is forbidden: quota'
    body = await h.reconcile()
    failure = body["status"]["failure"]
    assert body["status"]["phase"] == "Failed"
    assert failure["reason"] == "JobRejected"
    assert failure["message"].startswith("the API server refused Job ns/run-1-fetcher: ")
    assert "is forbidden: quota" in failure["message"]
    assert not h.cluster.jobs
    assert "FetcherJobCreated" not in h.reasons()
    assert len(h.finished) == 1


# -- adoption after a 409


async def test_a_job_that_appears_between_list_and_create_is_adopted() -> None:
    h = Harness()
    h.add_secrets()
    h.cluster.add_run(cr())
    # Without its label the list misses the Job, so the create meets a 409: ours, so adopted.
    h.cluster.add_job(job("run-1-fetcher"))
    body = await h.reconcile()
    assert h.cluster.calls.count("create_job") == 1
    assert "read_job" in h.cluster.calls
    assert body["status"]["phase"] == "Fetching"
    assert [e for e in h.cluster.effects if e[0] == "create_job"] == []


async def test_a_job_name_held_by_a_stranger_after_a_409_changes_nothing() -> None:
    h = Harness()
    h.add_secrets()
    h.cluster.add_run(cr())
    h.cluster.add_job(job("run-1-fetcher", owner="someone-else"))
    body = await h.reconcile()
    assert "status" not in body
    assert h.cluster.effects == []
    assert not h.finished


# -- the order of effects


async def test_a_new_run_creates_the_job_then_patches_then_posts_events() -> None:
    h = Harness()
    h.add_secrets()
    h.cluster.add_run(cr())
    await h.reconcile()
    assert h.cluster.effects == [
        ("create_job", "run-1-fetcher"),
        ("patch_status", "run-1"),
        ("create_event", "FetcherJobCreated"),
    ]


async def test_cancel_deletes_jobs_then_patches_posts_prunes_and_notifies_last() -> None:
    h = Harness()
    h.add_secrets()
    h.cluster.add_run(cr())
    await h.reconcile()
    h.cluster.runs["ns", "run-1"]["spec"]["cancel"] = True
    h.cluster.effects.clear()
    order: list[str] = []
    h.reconciler.finished_hooks = [lambda body: order.append(str(len(h.cluster.effects)))]
    body = await h.reconcile()
    assert body["status"]["phase"] == "Cancelled"
    assert h.cluster.effects == [
        ("delete_job", "run-1-fetcher"),
        ("patch_status", "run-1"),
        ("create_event", "SyncCancelled"),
    ]
    assert order == ["3"]  # the hook ran after every effect
    assert not h.cluster.jobs


async def test_an_event_the_api_server_refuses_does_not_stop_the_run() -> None:
    h = Harness()
    h.add_secrets()
    h.cluster.add_run(cr())
    h.cluster.faults["create_event"] = RuntimeError("events are forbidden")
    body = await h.reconcile()
    assert body["status"]["phase"] == "Fetching"
    assert ("ns", "run-1-fetcher") in h.cluster.jobs


async def test_a_failed_refusal_lookup_counts_as_no_refusal() -> None:
    h = Harness()
    h.add_secrets()
    h.cluster.add_run(cr())
    await h.reconcile()
    h.cluster.faults["list_events"] = RuntimeError("events are forbidden")
    body = await h.reconcile()
    assert "list_events" in h.cluster.calls
    assert body["status"]["phase"] == "Fetching"


# -- prune and notify exactly once


async def test_a_finished_run_prunes_and_notifies_exactly_once() -> None:
    h = maintaining()
    for i in range(3):  # older finished runs of the catalog, beyond a history of 1
        h.cluster.add_run(cr(f"old-{i}", uid=f"old-{i}", created=f"2026-04-0{i + 1}T00:00:00Z",
                             status={"phase": "Failed",
                                     "completionTime": f"2026-04-0{i + 1}T01:00:00Z"}))  # fmt: skip
    h.reconciler.settings = settings(CATALOGSYNC_FAILED_RUNS_HISTORY_LIMIT="1")
    for _ in range(3):
        body = await h.reconcile()
    assert body["status"]["phase"] == "Succeeded"
    assert body["status"]["maintainer"]["inserted"] == 5
    assert len(h.finished) == 1
    assert h.finished[0]["status"]["phase"] == "Succeeded"
    assert h.reasons().count("HistoryPruned") == 1
    assert sorted(e[1] for e in h.cluster.effects if e[0] == "delete_run") == ["old-0", "old-1"]
    assert ("ns", "old-2") in h.cluster.runs


async def test_the_end_of_a_run_is_patched_before_history_is_pruned() -> None:
    h = maintaining()
    await h.reconcile()
    kinds = [e[0] for e in h.cluster.effects]
    assert kinds[0] == "patch_status"
    assert kinds.index("patch_status") < kinds.index("create_event")
    assert h.cluster.calls.index("patch_run_status") < len(h.cluster.calls) - 1
    assert h.cluster.calls[-1] == "list_runs"  # prune reads the runs last; nothing to delete


async def test_a_failing_hook_is_logged_and_the_others_still_run() -> None:
    h = maintaining()
    seen: list[str] = []

    def broken(body: Mapping[str, Any]) -> None:
        raise RuntimeError("receiver down")

    async def fine(body: Mapping[str, Any]) -> None:
        seen.append(body["status"]["phase"])

    h.reconciler.finished_hooks = [broken, fine]
    await h.reconcile()
    assert seen == ["Succeeded"]


# -- what is left alone


async def test_a_missing_or_deleted_run_is_left_alone() -> None:
    h = Harness()
    await h.reconcile("absent")
    deleting = cr()
    deleting["metadata"]["deletionTimestamp"] = "2026-05-01T11:59:00Z"
    h.cluster.add_run(deleting)
    await h.reconcile()
    assert h.cluster.effects == []


async def test_resync_reconciles_only_unfinished_runs() -> None:
    h = Harness()
    h.add_secrets()
    h.cluster.add_run(cr())
    done = copy.deepcopy(cr("run-0", uid="run-0", status={"phase": "Succeeded"}))
    h.cluster.add_run(done)
    await h.reconciler.resync(["ns"])
    assert ("ns", "run-1-fetcher") in h.cluster.jobs
    assert h.cluster.runs["ns", "run-0"] == done
    assert h.cluster.calls.count("get_run") == 1


@pytest.mark.parametrize("scope", [None, ["ns"]])
async def test_resync_survives_a_run_that_fails_to_reconcile(scope: list[str] | None) -> None:
    h = Harness()
    h.cluster.add_run(cr())
    h.cluster.faults["read_secret_data"] = RuntimeError("apiserver restarting")
    await h.reconciler.resync(scope)
    assert h.cluster.effects == []


# -- every write guarded by the uid the decision was made for


class DeletedDuringObserve(MemoryCluster):
    """The run is deleted (and its Jobs collected) after it was read, while its pods are listed:
    the race of a ``kubectl delete`` landing ~100 ms after the fetcher Job was created."""

    replacement: dict[str, Any] | None = None

    async def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        for key in [k for k in self.runs if k[0] == namespace]:
            await self.delete_run(*key, uid=self.runs[key]["metadata"]["uid"])
        if self.replacement is not None:
            self.add_run(self.replacement)
        self.effects.clear()
        return await super().list_pods(namespace, label_selector)


def fetching(cluster: MemoryCluster) -> Harness:
    h = Harness()
    h.cluster = cluster
    h.reconciler.cluster = cluster
    h.add_secrets()
    status = {"phase": "Fetching", "startTime": "2026-05-01T11:55:48Z",
              "fetcher": {"jobName": "run-1-fetcher"}}  # fmt: skip
    h.cluster.add_run(cr(status=status))
    h.cluster.add_job(labelled(job("run-1-fetcher")))
    return h


async def test_a_run_deleted_mid_reconcile_gets_no_failure_events_and_no_notice() -> None:
    h = fetching(DeletedDuringObserve())
    await h.reconcile()
    assert h.cluster.runs == {}
    assert h.reasons() == [], "no FetchFailed/SyncFailed (JobLost) for a deleted run"
    assert h.finished == [], "no notice for a deleted run"
    assert [e[0] for e in h.cluster.effects] == ["patch_status"], "refused, nothing after it"


async def test_a_run_replaced_under_the_same_name_is_not_written_to() -> None:
    cluster = DeletedDuringObserve()
    cluster.replacement = cr(uid="cr-uid-2")
    h = fetching(cluster)
    await h.reconcile()
    assert "status" not in h.cluster.run("ns", "run-1"), "the new run's status is untouched"
    assert h.reasons() == []
    assert h.finished == []


async def test_a_job_is_deleted_only_if_it_is_the_one_observed() -> None:
    h = Harness()
    h.add_secrets()
    h.cluster.add_run(cr())
    await h.reconcile()
    h.cluster.runs["ns", "run-1"]["spec"]["cancel"] = True
    observed = h.cluster.jobs["ns", "run-1-fetcher"]["metadata"]["uid"]
    await h.reconcile()
    assert h.cluster.deleted_job_uids == [observed]


# -- history pruning reports what it deleted, once


def burst(h: Harness, count: int) -> list[str]:
    names = []
    for i in range(count):
        name = f"skip-{i:02d}"
        h.cluster.add_run(cr(name, uid=name, created="2026-05-01T11:00:00Z",
                             status={"phase": "Skipped",
                                     "completionTime": "2026-05-01T11:00:01Z"}))  # fmt: skip
        names.append(name)
    return names


class YieldingCluster(MemoryCluster):
    """Lets other coroutines run inside the calls prunes make, as a real API round trip does."""

    async def list_runs(self, namespace: str | None) -> list[dict[str, Any]]:
        runs = await super().list_runs(namespace)
        await asyncio.sleep(0)
        return runs

    async def delete_run(self, namespace: str, name: str, uid: str) -> bool:
        await asyncio.sleep(0)
        return await super().delete_run(namespace, name, uid)


async def test_concurrent_prunes_delete_each_run_once_and_report_only_their_own_deletions() -> None:
    h = maintaining()
    cluster = YieldingCluster()
    cluster.__dict__.update(h.cluster.__dict__)
    h.cluster = cluster
    h.reconciler.cluster = cluster
    burst(h, 8)
    h.cluster.add_run(cr("run-2", uid="run-2", status={"phase": "Failed"}))
    others = [h.reconciler.prune(h.cluster.run("ns", "run-2"), resolve_run(h, "run-2"))]
    await asyncio.gather(h.reconcile(), *others)
    deletes = [e[1] for e in h.cluster.effects if e[0] == "delete_run"]
    assert len(deletes) == len(set(deletes)), f"DELETEs repeated: {deletes}"
    pruned = [e for e in h.cluster.events if e["reason"] == "HistoryPruned"]
    reported = [n for e in pruned for n in e["message"].rsplit(": ", 1)[1].split(", ")]
    assert sorted(reported) == sorted(deletes), "each deletion reported exactly once"
    for event in pruned:
        assert event["involvedObject"]["name"] not in event["message"].rsplit(": ", 1)[1]


async def test_a_run_gone_before_its_delete_is_not_reported_as_pruned() -> None:
    h = maintaining()
    burst(h, 3)
    h.cluster.gone_on_delete.add("skip-00")  # deleted by someone else between list and DELETE
    await h.reconcile()
    pruned = [e["message"] for e in h.cluster.events if e["reason"] == "HistoryPruned"]
    assert len(pruned) == 1
    assert "deleted 1 finished run(s)" in pruned[0]
    assert pruned[0].endswith(": skip-01")


def resolve_run(h: Harness, name: str) -> Any:
    from catalogsync.operator.spec import resolve

    return resolve(h.cluster.run("ns", name), h.settings)


# -- events in causal order


async def test_events_are_named_so_that_the_api_lists_them_in_the_order_they_happened() -> None:
    """The API lists events by name and ``kubectl describe`` sorts by a one-second timestamp, so
    events of one reconcile would shuffle; names that grow with time keep the order."""
    h = maintaining()
    await h.reconcile()
    posted = [e["reason"] for e in h.cluster.events]
    assert posted == ["MaintainSucceeded", "SyncSucceeded"]
    by_name = sorted(h.cluster.events, key=lambda e: e["metadata"]["name"])
    assert [e["reason"] for e in by_name] == posted
    for event in h.cluster.events:
        assert event["metadata"]["name"].startswith("run-1.")
