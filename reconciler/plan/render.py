"""Render a plan for people: text for a terminal, Markdown for a pull request, JSON.

Sits after plan, at the CLI and API surface (`reconciler plan --output
text|json|markdown`, `GET /api/v1/plan`). Pure functions from a `Plan` to text;
values in a plan are already redacted, and everything printed is passed through
the secret redactor once more.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from reconciler.plan.plan import ObservedOnly, Operation, Plan, PlannedAction, UndoAction

_T = TypeVar("_T")

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
    watched = _observed_summary(plan)
    if plan.in_sync:
        return f"In sync: {s.in_sync} resources match their declared state, nothing to do." + (
            f" {watched}." if watched else ""
        )
    if not plan.waves and not plan.unknown_providers:
        return f"Nothing to do: {watched} (never acted on)."
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
    if watched:
        parts.append(watched)
    line = "Plan: " + ", ".join(parts)
    if s.destructive:
        line += f" — {s.destructive} destructive"
    return line


def _observed_summary(plan: Plan) -> str:
    """``3 observed only (1 differs)``, or empty."""
    if not plan.observed_only:
        return ""
    differ = sum(1 for o in plan.observed_only if o.state != "in-sync")
    return f"{len(plan.observed_only)} observed only ({differ} differ{'s' if differ == 1 else ''})"


OBSERVED_TITLE = "Observed only (never acted on, whatever selfHeal and prune say):"


def _observed_lines(entry: ObservedOnly, indent: str = "  ") -> list[str]:
    symbol = "=" if entry.state == "in-sync" else "!"
    lines = [f"{indent}{symbol} {entry.key}  {entry.state}  ({entry.why})"]
    for change in entry.changes:
        declared = "(absent)" if change.absent == "declared" else _show(change.declared)
        observed = "(absent)" if change.absent == "observed" else _show(change.observed)
        lines.append(f"{indent}    {change.path}: observed {observed}, declared {declared}")
    if entry.state != "differs":
        lines.extend(f"{indent}    why: {reason}" for reason in entry.reasons)
    if entry.would is not None:
        would = f"{indent}    if managed: {VERBS[entry.would]}"
        if entry.stages:
            would += ": " + " → ".join(entry.stages)
        lines.append(would + ("  [DESTRUCTIVE]" if entry.destructive else ""))
    return lines


def _observed_block(plan: Plan, indent: str = "  ") -> list[str]:
    lines: list[str] = []
    for entry in plan.observed_only:
        lines.extend(_observed_lines(entry, indent))
    return lines


UNDO_TITLE = "Undo (the head brings back what was applied before; re-running is not time travel):"


def _undo_lines(plan: Plan, indent: str = "  ") -> list[str]:
    lines: list[str] = []
    for entry in plan.undo:
        subject = f' "{entry.subject}"' if entry.subject else ""
        by = f" by {entry.author}" if entry.author else ""
        back = f", back to revision {entry.restores[:12]}" if entry.restores else ""
        lines.append(f"{indent}~ {entry.key}  undoes {entry.commit[:12]}{subject}{by}{back}")
        if entry.stages:
            lines.append(f"{indent}    re-runs: {' → '.join(entry.stages)}")
        lines.extend(f"{indent}    CANNOT UNDO: {what}" for what in entry.cannot_undo)
        if entry.blocked:
            lines.append(f"{indent}    BLOCKED: {entry.blocked}")
    return lines


def _undo_markdown(entry: UndoAction) -> str:
    subject = f' "{entry.subject}"' if entry.subject else ""
    by = f" by {entry.author}" if entry.author else ""
    back = f", back to revision `{entry.restores[:12]}`" if entry.restores else ""
    text = f"`{entry.key}` undoes `{entry.commit[:12]}`{subject}{by}{back}"
    if entry.stages:
        text += f"; re-runs {', '.join(entry.stages)}"
    text += "".join(f"\n>   - **Cannot undo:** {what}" for what in entry.cannot_undo)
    if entry.blocked:
        text += f"\n>   - **Blocked:** {entry.blocked}"
    return text


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
    if action.undoes:
        lines.append(f"{indent}    undoes: {action.undoes[:12]} (see Undo)")
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
    if plan.undo:
        lines.extend([UNDO_TITLE, *_undo_lines(plan), ""])
    for wave in plan.waves:
        lines.append(f"Wave {wave.number}:")
        for action in wave.actions:
            lines.extend(_action_lines(action))
        lines.append("")
    if plan.observed_only:
        lines.extend([OBSERVED_TITLE, *_observed_block(plan), ""])
    lines.extend(f"note: {note}" for note in plan.notes)
    if plan.notes:
        lines.append("")
    lines.append(summary_line(plan))
    return "\n".join(lines) + "\n"


def render_json(plan: Plan) -> str:
    """The plan value as indented JSON (schema: schemas/plan.json)."""
    return plan.to_json(indent=2) + "\n"


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
        return "\n".join([*body, "", *tail]) + "\n"

    full = assemble(_wave_blocks(plan), None)
    if len(full) <= limit:
        return full, full
    total = len(plan.actions)
    kept, shown = _cut_blocks(plan, limit - len(assemble([], _cut_note(total))) - 2)
    return assemble(kept, _cut_note(total - shown)), full


def _markdown_head(plan: Plan) -> list[str]:
    """The comment's opening: the summary table, then blocked and destructive actions."""
    s = plan.summary
    undo: list[str] = []
    if plan.undo:
        undo = ["> [!IMPORTANT]", f"> **{UNDO_TITLE.rstrip(':')}**", ">"]
        undo += _listed(plan.undo, _undo_markdown, "> - ")
        undo.append("")
    head = [
        f"### reconciler plan — `{plan.revision or 'working tree'}`",
        "",
        *undo,
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
    """The comment's end: the observed-only resources, the plan's notes and its hash."""
    tail: list[str] = []
    if plan.observed_only:
        tail = [f"#### {OBSERVED_TITLE.rstrip(':')}", "", "```diff"]
        tail += [*_observed_block(plan, indent=""), "```", ""]
    if plan.notes:
        tail += ["**Notes**", *(f"- {note}" for note in plan.notes), ""]
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


def _listed(actions: Sequence[_T], line: Callable[[_T], str], prefix: str) -> list[str]:
    lines = [prefix + line(a) for a in actions[:LISTED]]
    if len(actions) > LISTED:
        lines.append(f"{prefix}… and {len(actions) - LISTED} more")
    return lines


def _cut_note(left_out: int) -> str:
    return (
        f"> **Truncated:** {left_out} more action(s) not shown here to fit a comment; "
        "the full plan is attached as a separate file."
    )
