"""Server-side setup for ``scripts/services.sh``: the process work pool (concurrency limit 1: DVC
locks the repo, so runs queue instead of colliding) and an automation that marks flow runs whose
process died (worker or machine killed) as Crashed. One Python call instead of several slow CLI calls.

Flow runs started by a worker emit heartbeats when ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` is set
(``scripts/services.sh`` sets it); this automation, from Prefect's "detect zombie flows" guide, turns a
Running flow run whose heartbeats stop for ``--within`` seconds into Crashed, so the UI tells the truth
and a rerun can start (DVC then skips the stages that finished). ``python -m flows.services_setup --pool proxy3d`` does both, idempotently.
"""

from __future__ import annotations

import argparse
from datetime import timedelta

NAME = "proxy3d: crash zombie flow runs"


def ensure_pool(name: str, concurrency_limit: int = 1) -> None:
    """Create the process work pool ``name`` if missing and set its concurrency limit."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=name, type="process", concurrency_limit=concurrency_limit))
            return
        if pool.type != "process":
            raise ValueError(f"work pool {name!r} exists with type {pool.type!r}, not 'process'; delete it "
                             f"(prefect work-pool delete {name}) or choose another POOL")
        if pool.concurrency_limit != concurrency_limit:
            client.update_work_pool(name, WorkPoolUpdate(concurrency_limit=concurrency_limit))


def ensure_automation(within_s: int = 90) -> str:
    """Create the automation unless one with the same name exists; returns its id."""
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    try:
        return str(Automation.read(name=NAME).id)
    except ValueError:
        pass
    automation = Automation(
        name=NAME,
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                    "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=within_s),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message=f"no heartbeat for {within_s} s: the worker or its machine died")],
    ).create()
    return str(automation.id)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flows.services_setup", description=__doc__.split("\n")[0])
    p.add_argument("--pool", default="proxy3d", help="process work pool to create (default proxy3d)")
    p.add_argument("--within", type=int, default=90, help="seconds without heartbeat before Crashed (default 90)")
    a = p.parse_args(argv)
    ensure_pool(a.pool, 1)
    print(ensure_automation(a.within))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
