"""Render a plan for people: text for a terminal, Markdown for a pull request, JSON.

Sits after plan, at the CLI and API surface (`reconciler plan --output
text|json|markdown`, `GET /api/v1/plan`). Pure functions from a `Plan` to text;
values in a plan are already redacted, and everything printed is passed through
the secret redactor once more.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from reconciler.plan.plan import Operation, Plan, PlannedAction
from reconciler.secrets import REDACTOR

MARKDOWN_LIMIT = 60_000
"""GitHub's limit for a comment is 65,536 characters; keep a margin."""

SYMBOLS = {
    Operation.CREATE: "+",
    Operation.UPDATE: "~",
    Operation.ADOPT: "=",
    Operation.DECOMMISSION: "-",
    Operation.REPORT_DRIFT: "!",
    Operation.REPORT_ORPHAN: "?",
    Operation.UNKNOWN: "?",
}

VERBS = {
    Operation.CREATE: "create",
    Operation.UPDATE: "update",
    Operation.ADOPT: "adopt (nothing runs)",
    Operation.DECOMMISSION: "decommission",
    Operation.REPORT_DRIFT: "drift (report only)",
    Operation.REPORT_ORPHAN: "orphan (kept)",
    Operation.UNKNOWN: "unknown",
}


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def summary_line(plan: Plan) -> str:
    """``Plan: 3 to create, 1 to update, 0 to destroy, 2 drifted (report only), 1 blocked``"""
    s = plan.summary
    if plan.in_sync:
        return f"In sync: {s.in_sync} resources match their declared state, nothing to do."
    if not plan.waves:
        return (
            f"Incomplete: provider(s) {', '.join(plan.unknown_providers)} could not be "
            "trusted; nothing else to do."
        )
    parts = [
        f"{s.create} to create",
        f"{s.update} to update",
        f"{s.destroy} to destroy",
        f"{s.drifted} drifted (report only)",
    ]
    if s.adopt:
        parts.append(f"{s.adopt} to adopt")
    if s.orphaned:
        parts.append(f"{s.orphaned} orphaned (kept)")
    parts.append(f"{s.blocked} blocked")
    line = "Plan: " + ", ".join(parts)
    if s.destructive:
        line += f" — {s.destructive} destructive"
    return line


def _header(plan: Plan) -> str:
    p = plan.policy
    revision = plan.revision or "(working tree)"
    return (
        f"Plan for revision {revision} (prune {'on' if p.prune else 'off'}, "
        f"self-heal {'on' if p.self_heal else 'off'}, "
        f"at most {p.max_destructive_actions} destructive)"
    )


def _action_lines(action: PlannedAction, indent: str = "  ") -> list[str]:
    title = f"{indent}{SYMBOLS[action.operation]} {action.key}  {VERBS[action.operation]}"
    if action.stages:
        title += ": " + " → ".join(action.stages)
    if action.destructive:
        title += "  [DESTRUCTIVE]"
    lines = [title]
    if action.blocked:
        lines.append(f"{indent}    BLOCKED: {action.blocked}")
    for change in action.changes:
        declared = "(absent)" if change.absent == "declared" else _show(change.declared)
        observed = "(absent)" if change.absent == "observed" else _show(change.observed)
        lines.append(
            f"{indent}    {change.path}: {observed} → {declared}"
            f"  ({'changed in Git' if change.cause == 'git' else 'drift'})"
        )
    lines.extend(f"{indent}    why: {reason}" for reason in action.reasons)
    return lines


def render_text(plan: Plan) -> str:
    """The terminal view: grouped by wave, `+ ~ - !` per action, a summary line."""
    lines = [_header(plan), ""]
    for wave in plan.waves:
        lines.append(f"Wave {wave.number}:")
        for action in wave.actions:
            lines.extend(_action_lines(action))
        lines.append("")
    lines.extend(f"note: {note}" for note in plan.notes)
    if plan.notes:
        lines.append("")
    lines.append(summary_line(plan))
    return REDACTOR.text("\n".join(lines)) + "\n"


def render_json(plan: Plan) -> str:
    """The plan value as indented JSON (schema: schemas/plan.json)."""
    return REDACTOR.text(plan.to_json(indent=2)) + "\n"


def render_markdown(plan: Plan, limit: int = MARKDOWN_LIMIT) -> tuple[str, str]:
    """(summary, full) Markdown for a pull request comment.

    `summary` fits in `limit` characters: when the full plan does not, its action
    list is cut at a wave or action boundary with a note saying how much is left
    out and that the full plan is attached separately. `full` is never cut.
    """
    head = _markdown_head(plan)
    tail = _markdown_tail(plan)

    def assemble(parts: list[str], note: str | None) -> str:
        body = [*head, *parts]
        if note:
            body += ["", note]
        return REDACTOR.text("\n".join([*body, "", *tail])) + "\n"

    full = assemble(_wave_blocks(plan), None)
    if len(full) <= limit:
        return full, full
    total = len(plan.actions)
    kept, shown = _cut_blocks(plan, limit - len(assemble([], _cut_note(total))) - 2)
    return assemble(kept, _cut_note(total - shown)), full


def _markdown_head(plan: Plan) -> list[str]:
    """The comment's opening: the summary table, then blocked and destructive actions."""
    s = plan.summary
    head = [
        f"### reconciler plan — `{plan.revision or 'working tree'}`",
        "",
        f"**{summary_line(plan)}**",
        "",
        "| create | update | destroy | drifted | orphaned | blocked | destructive | in sync |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {s.create} | {s.update} | {s.destroy} | {s.drifted} | {s.orphaned} | {s.blocked} "
        f"| {s.destructive} | {s.in_sync} |",
        "",
    ]
    if plan.blocked:
        head.append("> [!WARNING]")
        head.append(f"> {len(plan.blocked)} action(s) blocked by guardrails; see below.")
        head.extend(_listed(plan.blocked, lambda a: f"`{a.key}`: {a.blocked}", "> - "))
        head.append("")
    destroys = [a for a in plan.actions if a.destructive and a.blocked is None]
    if destroys:
        head.append("> [!CAUTION]")
        head.append(f"> {len(destroys)} destructive action(s) will run:")
        head.extend(
            _listed(
                destroys,
                lambda a: (
                    f"`{a.key}`: {VERBS[a.operation]}"
                    + (f" (stages {', '.join(a.stages)})" if a.stages else "")
                ),
                "> - ",
            )
        )
        head.append("")
    return head


def _markdown_tail(plan: Plan) -> list[str]:
    """The comment's end: the plan's notes and its hash."""
    tail = [f"- {note}" for note in plan.notes]
    if tail:
        tail.insert(0, "**Notes**")
        tail.append("")
    tail.append(f"<sub>plan `{plan.content_hash[:16]}`</sub>")
    return tail


def _wave_blocks(plan: Plan) -> list[str]:
    """One `diff` code block per wave, every action in it."""
    blocks: list[str] = []
    for wave in plan.waves:
        block = [f"#### Wave {wave.number}", "", "```diff"]
        for action in wave.actions:
            block.extend(_action_lines(action, indent=""))
        block.append("```\n")
        blocks.append("\n".join(block))
    return blocks


def _cut_blocks(plan: Plan, budget: int) -> tuple[list[str], int]:
    """The wave blocks that fit in `budget` characters, cut at an action boundary, and
    how many actions they show."""
    kept: list[str] = []
    shown = 0
    used = 0
    for wave in plan.waves:
        opening = [f"#### Wave {wave.number}", "", "```diff"]
        lines: list[str] = []
        cost = len("\n".join(opening)) + len("\n```") + 2
        for action in wave.actions:
            text = "\n".join(_action_lines(action, indent=""))
            if used + cost + len(text) + 1 > budget:
                break
            lines.append(text)
            cost += len(text) + 1
            shown += 1
        if lines:
            kept.append("\n".join([*opening, *lines, "```\n"]))
            used += cost
        if len(lines) < len(wave.actions):
            break
    return kept, shown


LISTED = 20
"""Blocked and destructive actions named at the top of a PR comment, at most."""


def _listed(
    actions: Sequence[PlannedAction], line: Callable[[PlannedAction], str], prefix: str
) -> list[str]:
    lines = [prefix + line(a) for a in actions[:LISTED]]
    if len(actions) > LISTED:
        lines.append(f"{prefix}… and {len(actions) - LISTED} more")
    return lines


def _cut_note(left_out: int) -> str:
    return (
        f"> **Truncated:** {left_out} more action(s) not shown here to fit a comment; "
        "the full plan is attached as a separate file."
    )
