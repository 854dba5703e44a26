"""A rollout's progress from literal values: the plan's covered actions, what became of
them (an execution's outcomes, or the live progress), and pauses."""

from __future__ import annotations

from reconciler.controller.progress import ProgressState
from reconciler.plan.plan import Operation, Plan, PlannedAction, PlanPolicy, Summary, Wave
from reconciler.report.rollout_progress import (
    read_rollouts,
    rollout_progress,
    rollouts_json,
    states_live,
)

HELD = (
    "rollout policy is paused: 2 resource(s) failed (pauseOnFailure) (resume: change "
    "rollout.resume in Git, or POST /api/v1/rollouts/policy/resume)"
)


def action(name: str, batch: str, blocked: str | None = None) -> PlannedAction:
    return PlannedAction(
        key=f"Machine/{name}", kind="Machine", name=name, provider="sim",
        operation=Operation.UPDATE, rollout="policy", batch=batch, blocked=blocked,
    )  # fmt: skip


def plan(*actions: PlannedAction) -> Plan:
    return Plan.build(
        revision="r1",
        policy=PlanPolicy(prune=False, self_heal=False, max_destructive_actions=5),
        waves=[Wave(number=1, actions=actions)],
        summary=Summary(),
    )


def test_live_progress_counts_each_state_and_says_why() -> None:
    state = ProgressState(clock=lambda: 0.0)
    for event in (
        {"event": "plan.started", "actions": 4},
        {"event": "resource.started", "resource": "Machine/a"},
        {"event": "resource.finished", "resource": "Machine/a", "result": "succeeded"},
        {"event": "resource.started", "resource": "Machine/b"},
        {"event": "task.failed", "resource": "Machine/b", "stage": "os", "error": "boom"},
        {"event": "resource.finished", "resource": "Machine/b", "result": "failed"},
        {"event": "resource.started", "resource": "Machine/c"},
        {"event": "resource.skipped", "resource": "Machine/d", "reason": "domain r2 is full"},
        {"event": "rollout.paused", "rollout": "policy", "reason": "1 resource(s) failed"},
    ):  # fmt: skip
        state.apply(event)
    shown = rollout_progress(
        plan(
            action("a", "canary"),
            action("b", "rack=r1"),
            action("c", "rack=r1"),
            action("d", "rack=r2"),
            action("e", "rack=r2"),
        ),
        states_live(state.running, state.ended),
        state.paused,
    )
    (progress,) = shown
    assert [(m.key, m.state, m.why) for m in progress.members] == [
        ("Machine/a", "done", ""),
        ("Machine/b", "failed", "stage os: boom"),
        ("Machine/c", "running", ""),
        ("Machine/d", "waiting", "domain r2 is full"),
        ("Machine/e", "waiting", ""),
    ]
    assert progress.line() == (
        "rollout policy: 1 done · 1 running · 2 waiting · 1 failed · paused: 1 resource(s) "
        "failed (resume: change rollout.resume in Git, or POST /api/v1/rollouts/policy/resume)"
    )


def test_a_pause_from_an_earlier_cycle_is_read_from_the_held_actions_and_round_trips() -> None:
    shown = rollout_progress(plan(action("a", "rack=r1", HELD)), {}, {})
    assert shown[0].paused == "2 resource(s) failed (pauseOnFailure)"
    assert shown[0].members[0].why == HELD
    assert read_rollouts(rollouts_json(shown, "r1")) == shown
    assert read_rollouts(b"{not json") == ()
    assert rollout_progress(None, {}, {"pipeline-x": "canary failed"})[0].members == ()
