"""Asking the person at the terminal to approve tool calls, then continuing the run.

When a run ends ``interrupted``, each waiting call is shown with its arguments and answered
y (run it), n (reject it; the model is told), or e (edit the arguments as JSON, then run). Without
an answer (end of input) nothing is decided: the thread keeps waiting and
``agent-ng resume --thread ID`` asks again later.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from langgraph.types import Command
from rich.console import Console

Run = Callable[[Any, Any, dict], Awaitable[str | None]]
"""Shows one run: ``(graph, input, config) -> run_end status``."""


async def settle(graph: Any, config: dict, status: str | None, run: Run, console: Console) -> str | None:
    """Ask about every waiting approval and resume, until the run is no longer interrupted."""
    while status == "interrupted":
        snapshot = await graph.aget_state(config)
        answers = {}
        for waiting in snapshot.interrupts:
            answer = ask(waiting.value, console)
            if answer is None:
                thread = config["configurable"]["thread_id"]
                console.print(f"(no answer: the thread waits; continue with agent-ng resume --thread {thread})")
                return status
            answers[waiting.id] = answer
        status = await run(graph, Command(resume=answers), config)
    return status


def ask(value: Any, console: Console) -> dict[str, Any] | None:
    """One decision for one waiting call; None at end of input."""
    if not isinstance(value, dict) or value.get("type") != "approval":
        console.print(f"[bold]The run waits for an answer:[/] {value!r}")
        return prompt_json(console, "answer (JSON)")
    if value.get("error"):
        console.print(f"[red]{value['error']}[/]")
    call = f"{value['name']}({json.dumps(value['args'])})"
    while True:
        try:
            choice = console.input(f"[bold yellow]approve[/] {call}? [y]es / [n]o / [e]dit: ").strip().lower()
        except EOFError:
            return None
        if choice in ("y", "yes"):
            return {"action": "approve"}
        if choice in ("n", "no"):
            try:
                reason = console.input("reason (optional): ").strip()
            except EOFError:
                reason = ""
            return {"action": "reject", "reason": reason}
        if choice in ("e", "edit"):
            while True:
                args = prompt_json(console, f"new arguments, as JSON (were {json.dumps(value['args'])})")
                if args is None:
                    return None
                if isinstance(args, dict):
                    return {"action": "edit", "args": args}
                console.print("[red]the arguments must be a JSON object, like {\"a\": 1}[/]")
        else:
            console.print("answer y, n or e")


def prompt_json(console: Console, label: str) -> Any:
    """Ask until the answer is valid JSON; None at end of input."""
    while True:
        try:
            text = console.input(f"{label}: ")
        except EOFError:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            console.print(f"[red]not valid JSON ({e}); try again[/]")
