"""The task tree: live tasks under the task that spawned them, rendered one line per task.

One rendering serves the deadlock report (``DeadlockError``) and ``stackful.dump``, which
passes a richer description of each task.  A task whose spawner has finished hangs from the
root, marked with the spawner's id, so no live task is ever left out.

Groups: a task may carry a ``_group`` attribute (a task group / nursery, once the runtime
has them); siblings of one group are drawn under a line naming the group, in the group's
first-spawned position.  Nothing here needs to know what a group is beyond ``str()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ._task import BLOCKED, Task


def describe_briefly(task: Task) -> str:
    """``task 'name' waiting on <reason>`` (blocked), else ``task 'name' <state>``."""
    if task.state is BLOCKED:
        return f"task {task.name!r} waiting on {task._wait_reason}"
    return f"task {task.name!r} {task.state}"


def tree_lines(
    tasks: Iterable[Task],
    describe: Callable[[Task], str] = describe_briefly,
    indent: str = "  ",
) -> list[str]:
    """Render ``tasks`` (live ones, in spawn order) as a tree: one line per task (and group)."""
    tasks = list(tasks)
    by_id = {task.id: task for task in tasks}
    children: dict[int | None, list[Task]] = {}
    for task in tasks:
        parent = getattr(task, "_parent_id", None)
        if parent is not None and parent not in by_id:
            parent = None  # its spawner has finished: it hangs from the root
        children.setdefault(parent, []).append(task)
    lines: list[str] = []

    def label(task: Task) -> str:
        text = describe(task)
        parent = getattr(task, "_parent_id", None)
        if parent is not None and parent not in by_id:
            text += f" (spawned by finished task {parent})"
        return text

    def rows(parent_id: int | None, prefix: str) -> list[tuple[str, Task | None, str]]:
        """The rows under ``parent_id``: (line, task whose subtree follows, its prefix)."""
        kids = children.get(parent_id)
        if not kids:
            return []
        # Siblings of one _group are drawn together, where the group's first task was.
        nodes: list[tuple[Any, list[Task]]] = []
        groups: dict[int, list[Task]] = {}
        for task in kids:
            group = getattr(task, "_group", None)
            if group is None:
                nodes.append((None, [task]))
            elif id(group) in groups:
                groups[id(group)].append(task)
            else:
                groups[id(group)] = members = [task]
                nodes.append((group, members))
        out: list[tuple[str, Task | None, str]] = []
        for i, (group, members) in enumerate(nodes):
            branch, below = ("└─ ", "   ") if i == len(nodes) - 1 else ("├─ ", "│  ")
            if group is None:
                out.append((f"{indent}{prefix}{branch}{label(members[0])}", members[0],
                            prefix + below))
                continue
            out.append((f"{indent}{prefix}{branch}group {group}", None, ""))
            inner = prefix + below
            for j, task in enumerate(members):
                b2, below2 = ("└─ ", "   ") if j == len(members) - 1 else ("├─ ", "│  ")
                out.append((f"{indent}{inner}{b2}{label(task)}", task, inner + below2))
        return out

    # Depth first without recursion (a chain of spawns can be thousands deep).
    pending: list[tuple[str, Task | None, str]] = [
        (f"{indent}{label(task)}", task, "") for task in children.get(None, ())
    ]
    pending.reverse()
    while pending:
        line, node, prefix = pending.pop()
        lines.append(line)
        if node is not None:
            pending.extend(reversed(rows(node.id, prefix)))
    return lines
