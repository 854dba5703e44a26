"""transitions: a cycle's plan and execution (and a resumed one) -> each resource's status."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from reconciler.execute.engine import ExecutionResult, ResourceOutcome
from reconciler.load.desired import Desired
from reconciler.model.status import ResourceStatus
from reconciler.plan.diff import diff
from reconciler.plan.plan import plan
from reconciler.report.transitions import next_statuses
from tests import plan_values as pv

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def test_a_resumed_plan_names_the_stages_it_ran_when_the_new_plan_is_in_sync() -> None:
    """After a crash, the resumed plan did the work and the cycle's own plan finds
    nothing to do: status still says which stage was reached (and who failed)."""
    done, broken, untouched = (pv.resource(n) for n in ("done", "broken", "untouched"))
    d = pv.desired([done, broken, untouched])
    observed = pv.observed(d, fields={r.key: pv.converged(r) for r in (done, broken, untouched)})
    records = pv.provisioned(d) | {done.key: pv.record(done, revision="abc1234")}
    found = diff(d, observed, last_applied=records)
    in_sync = plan(d, found)
    assert not in_sync.actions
    resumed = ExecutionResult(
        "e1",
        "p1",
        {
            done.key: ResourceOutcome(
                done.key, "create", "succeeded", stages_done=("discover", "register")
            ),
            broken.key: ResourceOutcome(
                broken.key,
                "create",
                "failed",
                stages_done=("discover",),
                failed_stage="register",
                failed_task="cmdb",
                error="answered 400",
            ),
        },
    )
    statuses, _ = next_statuses(
        desired=d,
        previous={},
        diff=found,
        plan=in_sync,
        execution=None,
        observed=observed,
        now=NOW,
        resumed=resumed,
        records=records,
    )
    assert statuses[done.key].phase == "Ready"
    assert statuses[done.key].stage_reached == "register"
    assert statuses[done.key].last_applied is not None
    assert statuses[done.key].last_applied.revision == "abc1234"
    assert statuses[broken.key].phase == "Failed"
    assert statuses[broken.key].failure is not None
    assert statuses[broken.key].failure.task == "cmdb"
    assert statuses[untouched.key].phase == "Ready"
    assert statuses[untouched.key].stage_reached is None

    # Without the resumed outcomes (the bug), the stage reached was lost.
    without, _ = next_statuses(
        desired=d,
        previous={},
        diff=found,
        plan=in_sync,
        execution=None,
        observed=observed,
        now=NOW,
    )
    assert without[done.key].stage_reached is None


def test_this_cycles_plan_wins_over_a_resumed_outcome() -> None:
    """A resource the new plan acts on takes its status from this cycle, not the resume."""
    r = pv.resource("a")
    d = pv.desired([r])
    observed = pv.observed(d, absent=[r.key])
    found = diff(d, observed)
    p = plan(d, found)
    assert [a.key for a in p.actions] == [r.key]
    resumed = ExecutionResult(
        "e1", "p1", {r.key: ResourceOutcome(r.key, "create", "succeeded", stages_done=("x",))}
    )
    statuses, _ = next_statuses(
        desired=d,
        previous={},
        diff=found,
        plan=p,
        execution=None,
        observed=observed,
        now=NOW,
        resumed=resumed,
    )
    assert statuses[r.key].phase == "Pending"


def test_a_cycle_result_repr_is_short_whatever_the_fleet() -> None:
    """asyncio formats the main task's result when `asyncio.run` ends: it must be cheap."""
    from reconciler.controller.controller import CycleResult
    from reconciler.source.declared import SourceResult

    d = pv.desired([pv.resource(f"m{i}") for i in range(200)])
    observed = pv.observed(d, absent=list(d.resources))
    result = CycleResult(
        source=SourceResult(revision=None, load=None, head=None), plan=plan(d, diff(d, observed))
    )
    assert repr(result) == "CycleResult(revision=None, actions=200, ok=False)"


def test_failing_again_doubles_the_wait_and_a_change_in_git_starts_over() -> None:
    from datetime import timedelta

    from reconciler.model.kinds import FailureBackoff, PolicySpec

    r = pv.resource("a")
    spec = PolicySpec(failure_backoff=FailureBackoff(initial=60.0, maximum=150.0))
    d = pv.desired([r], policy_spec=spec)
    observed = pv.observed(d, absent=[r.key])
    found = diff(d, observed)
    p = plan(d, found)

    def fail(previous: dict[str, ResourceStatus], desired: Desired = d) -> dict[str, Any]:
        execution = ExecutionResult(
            "e",
            "p",
            {
                r.key: ResourceOutcome(
                    r.key, "create", "failed", failed_stage="discover", failed_task="x", error="e"
                )
            },
        )
        statuses, _ = next_statuses(
            desired=desired,
            previous=previous,
            diff=found,
            plan=p,
            execution=execution,
            observed=observed,
            now=NOW,
        )
        return statuses

    waits = []
    statuses: dict[str, ResourceStatus] = {}
    for _ in range(3):
        statuses = fail(statuses)
        failure = statuses[r.key].failure
        waits.append((failure.attempts, failure.retry_at - NOW))
    assert waits == [
        (1, timedelta(seconds=60)),
        (2, timedelta(seconds=120)),
        (3, timedelta(seconds=150)),  # capped at the maximum
    ]
    assert "failed 3 times in a row" in statuses[r.key].conditions[0].message
    assert failure.resolution == r.resolution()

    fixed = pv.resource("a", params={"os": "rhel"})
    again = fail(statuses, pv.desired([fixed], policy_spec=spec))
    assert again[r.key].failure.attempts == 1  # something new failed: counted afresh
