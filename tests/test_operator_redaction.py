"""The operator's outputs (status, events, webhook) pass the same redaction as the jobs' logs."""

from __future__ import annotations

import orjson

from catalogsync.common import redact
from tests.operator_objects import cr, job
from tests.test_operator_reconciler import Harness, owned_pod

DSN = "postgresql://sync:Op3r#torPass@127.0.0.1:5432/catalog"


async def test_status_and_events_never_carry_a_secret_the_operator_has_read() -> None:
    """A job's message that quotes the database password (a library's wording, say) reaches
    neither ``status.failure`` nor the events: the operator masks the Secret values it read."""
    h = Harness()
    h.add_secrets(database_url=DSN)
    h.cluster.add_run(cr())
    await h.reconcile()  # reads the Secrets, creates the fetcher Job
    fetcher = h.cluster.jobs[("ns", "run-1-fetcher")]
    fetcher["status"] = job("run-1-fetcher", conditions=[("Failed", "PodFailurePolicy")])["status"]
    leak = {
        "stage": "fetcher",
        "ok": False,
        "reason": "InvalidConfiguration",
        "message": "the password Op3r#torPass (or its half 'Op3r') was rejected",
        "exitCode": 2,
    }
    h.cluster.add_pod(
        owned_pod(fetcher, "run-1-fetcher-a", "fetcher", phase="Failed", exit_code=2, message=leak)
    )
    body = await h.reconcile()
    assert body["status"]["phase"] == "Failed", body["status"]
    written = orjson.dumps([body["status"], h.cluster.events]).decode()
    assert "InvalidConfiguration" in written
    for piece in ("Op3r#torPass", "Op3r", "torPass"):
        assert piece not in written, written


def test_a_dsn_password_is_masked_without_being_registered() -> None:
    assert redact.text("postgresql://u:Unreg1stered@h/db") == "postgresql://u:***@h/db"
