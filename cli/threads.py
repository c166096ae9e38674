"""``agent-ng threads``: list, show, fork and delete the checkpointed conversations.

    agent-ng threads list
    agent-ng threads show ID [--checkpoints 10]
    agent-ng threads fork ID [--checkpoint CHECKPOINT_ID] [--to NEW_ID]
    agent-ng threads delete ID --yes
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, TypeVar

import typer
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langgraph.pregel import Pregel
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agent_ng.graph.agent import build_graph
from agent_ng.models.offline import OfflineChatModel
from agent_ng.persistence.checkpoint import open_checkpointer
from agent_ng.persistence.thread_lock import ThreadBusyError
from agent_ng.persistence.threads import (
    ThreadNotFoundError,
    delete_thread,
    fork_thread,
    list_threads,
    show_thread,
)
from agent_ng.settings import Settings

app = typer.Typer(help="List, show, fork and delete threads.", no_args_is_help=True)
T = TypeVar("T")


@asynccontextmanager
async def thread_graph() -> AsyncIterator[Pregel]:
    """The agent graph on the configured checkpointer; thread operations never call the model."""
    settings = Settings()
    async with open_checkpointer(settings.checkpoint_url, pool_size=settings.checkpoint_pool_size) as saver:
        yield build_graph(OfflineChatModel(), checkpointer=saver, settings=settings)


def run(operation: Callable[[Pregel], Awaitable[T]]) -> T:
    """Run one operation; a missing thread, a busy one or a bad request is a one-line error."""

    async def main() -> T:
        async with thread_graph() as graph:
            return await operation(graph)

    try:
        return asyncio.run(main())
    except (ThreadNotFoundError, ThreadBusyError, ValueError) as e:
        typer.echo(f"error: {e.args[0] if isinstance(e, LookupError) else e}", err=True)
        raise typer.Exit(1) from None


@app.command("list")
def list_(limit: Annotated[int, typer.Option(help="How many threads, newest first.")] = 20) -> None:
    """The most recently used threads."""
    infos = run(lambda graph: list_threads(graph, limit))
    table = Table("thread", "updated", "messages", "status", "last question")
    table.columns[0].overflow = "fold"
    for info in infos:
        table.add_row(info.thread_id, when(info.updated_at), str(info.messages), info.status, escape(info.last_question or ""))
    Console().print(table if infos else "no threads yet")


@app.command()
def show(
    thread: Annotated[str, typer.Argument(help="Thread id.")],
    checkpoints: Annotated[int, typer.Option(help="How many checkpoints to list, newest first (fork from any).")] = 10,
) -> None:
    """A thread's messages, tool calls and their results, and its latest checkpoints."""
    history = run(lambda graph: show_thread(graph, thread, checkpoints))
    console = Console()
    console.print(f"[bold]thread {history.thread_id}[/] ({history.status})")
    for message in history.messages:
        console.print(message_line(message), highlight=False)
    for waiting in history.interrupts:
        console.print(f"[yellow]waiting for approval:[/] {escape(json.dumps(waiting.value, default=str))}")
    console.print("[bold]checkpoints[/] (newest first; fork from any with --checkpoint):")
    for c in history.checkpoints:
        console.print(
            f"  {c.checkpoint_id}  {when(c.created_at)}  step {c.step}  {c.messages} messages"
            + (f"  next: {', '.join(c.next)}" if c.next else ""),
            highlight=False,
            soft_wrap=True,
        )


@app.command()
def fork(
    thread: Annotated[str, typer.Argument(help="Thread to fork.")],
    checkpoint: Annotated[str | None, typer.Option(help="Checkpoint id to fork from (see threads show); default: the latest.")] = None,
    to: Annotated[str | None, typer.Option(help="Id of the new thread (default: a new one).")] = None,
) -> None:
    """A new thread with the state of an earlier checkpoint; the original is untouched."""
    new = run(lambda graph: fork_thread(graph, thread, checkpoint, to))
    typer.echo(new)
    typer.echo(f"(forked {thread}; continue with --thread {new})", err=True)


@app.command()
def delete(
    thread: Annotated[str, typer.Argument(help="Thread to delete.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a thread and all its checkpoints."""
    if not yes:
        typer.confirm(f"delete thread {thread} and all its checkpoints?", abort=True)
    run(lambda graph: delete_thread(graph, thread))
    typer.echo(f"deleted {thread}")


def message_line(message: AnyMessage) -> str:
    """One message as ``threads show`` prints it: Rich markup, the message's own text escaped."""
    if isinstance(message, HumanMessage):
        return f"[bold]user:[/] {escape(message.text)}"
    if isinstance(message, ToolMessage):
        style = "red" if message.status == "error" else "green"
        return f"  [{style}]{escape(message.name or 'tool')} → {message.status}:[/] {escape(message.text)}  [dim]{message.tool_call_id}[/]"
    if isinstance(message, AIMessage):
        calls = "".join(
            f"\n  [cyan]calls {escape(c['name'])}({escape(json.dumps(c['args']))})[/]  [dim]{c['id']}[/]"
            for c in message.tool_calls
        )
        return f"[bold]assistant:[/] {escape(message.text)}{calls}"
    return f"{message.type}: {escape(message.text)}"


def when(timestamp: str | None) -> str:
    """An ISO timestamp to the second, UTC."""
    return timestamp[:19].replace("T", " ") if timestamp else ""
