"""The ``agent-ng`` command: ask a question, or chat, and watch the run live.

    agent-ng ask "what is 17*23 and how many primes are below 200000?"
    agent-ng ask "what did I ask before?" --thread demo
    agent-ng chat --thread demo
    agent-ng stats
    agent-ng resume --thread demo        # after a crash, or to answer approvals later
    agent-ng threads list | show ID | fork ID | delete ID
    agent-ng prune                       # old checkpoints and idle threads
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from typing import Annotated

import typer
from langchain_core.messages import HumanMessage
from rich.console import Console
from rich.live import Live

from agent_ng.cli import prune, threads
from agent_ng.cli.approvals import settle
from agent_ng.cli.bench import bench
from agent_ng.cli.serve import serve
from agent_ng.cli.settings import print_settings
from agent_ng.cli.stats import stats
from agent_ng.cli.tools import list_tools
from agent_ng.cli.view import PlainView, TurnView
from agent_ng.collector import tune_collector
from agent_ng.contract import EventType
from agent_ng.graph.agent import open_agent
from agent_ng.graph.events import AgentEvent, stream
from agent_ng.models.chat import ModelConfigError, ModelTimeoutError
from agent_ng.persistence.thread_lock import ThreadBusyError
from agent_ng.persistence.threads import UnfinishedRunError, thread_status
from agent_ng.settings import Settings
from agent_ng.tools.registry import McpConfigError

app = typer.Typer(help="A LangGraph agent that shows everything as it happens.", no_args_is_help=True)



@app.callback()
def main() -> None:
    """A LangGraph agent that shows everything as it happens."""
    tune_collector()


Thread = Annotated[str | None, typer.Option("--thread", "-t", help="Thread id to continue (default: a new thread).")]


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="What to ask.")],
    thread: Thread = None,
) -> None:
    """Ask one question; the answer and each tool stream live."""
    thread = thread or new_thread_id()
    finish(thread, run_cli(converse([question], thread)))


@app.command()
def chat(thread: Thread = None) -> None:
    """Talk in a loop on one thread (empty line or Ctrl-D ends)."""
    thread = thread or new_thread_id()
    finish(thread, run_cli(converse(prompts(), thread)))


@app.command()
def resume(thread: Annotated[str, typer.Option("--thread", "-t", help="Thread id to resume.")]) -> None:
    """Continue a thread whose run stopped mid-way (a crash) or waits for an approval."""
    finish(thread, run_cli(resume_thread(thread)))


async def resume_thread(thread: str) -> str | None:
    """Finish the thread's pending step from its checkpoint: only unfinished tools run again."""
    async with open_agent(Settings()) as agent:
        graph = agent.graph
        config = {"configurable": {"thread_id": thread}}
        snapshot = await graph.aget_state(config)
        if snapshot.metadata is None:
            raise typer.BadParameter(f"no thread {thread!r}", param_hint="--thread")
        if not snapshot.tasks:
            typer.echo(f"thread {thread} has nothing to resume: its last run finished", err=True)
            return None
        status = "interrupted" if snapshot.interrupts else await show_run(graph, None, config)
        return await settle(graph, config, status, show_run, Console())


def run_cli(session) -> str | None:
    """Run a session; a busy thread or a silent model is a clear error, Ctrl-C ends it as ``cancelled``."""
    try:
        return asyncio.run(session)
    except (ThreadBusyError, ModelTimeoutError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    except UnfinishedRunError as e:
        typer.echo(f"error: {e} with: agent-ng resume --thread {e.thread_id}", err=True)
        raise typer.Exit(1) from None
    except (McpConfigError, ModelConfigError) as e:
        typer.echo(f"agent-ng: {e}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        return "cancelled"


def prompts():
    """The questions typed at the prompt, until an empty line or end of input."""
    console = Console()
    while True:
        try:
            line = console.input("[bold]you>[/] ").strip()
        except EOFError:
            return
        if not line:
            return
        yield line


async def converse(questions, thread: str) -> str | None:
    """Run each question as a turn on ``thread``; the graph and checkpointer live for the session."""
    status = None
    async with open_agent(Settings()) as agent:
        graph = agent.graph
        config = {"configurable": {"thread_id": thread}}
        if (status := await thread_status(graph, thread)) != "idle":
            raise UnfinishedRunError(thread, status)
        for question in questions:
            status = await show_run(graph, {"messages": [HumanMessage(question)]}, config)
            status = await settle(graph, config, status, show_run, Console())
            if status == "interrupted":
                break
    return status


async def show_run(graph, input, config: dict) -> str | None:
    """Show one run live (a plain log when not on a terminal); its ``run_end`` status."""
    console = Console()
    events = stream(graph, input, config)
    if not console.is_terminal:
        view = PlainView(sys.stdout)
        await watch(events, view)
        return view.status
    view = TurnView()
    with Live(view, console=console, refresh_per_second=15, transient=False):
        await watch(events, view)
    return view.status


async def watch(events, view) -> None:
    """Show the run; on Ctrl-C (the task is cancelled) ``stream`` saves what was seen and the
    view ends the run as ``cancelled``."""
    event = None
    try:
        async for event in events:
            view.handle(event)
    except asyncio.CancelledError:
        if event is not None:
            view.handle(AgentEvent(EventType.RUN_END, event.run_id, event.thread_id, event.t, status="cancelled"))
        raise


def finish(thread: str, status: str | None) -> None:
    """Say how to continue the thread; exit 1 after an error, 130 after a cancel."""
    typer.echo(f"\n(thread {thread}; continue with --thread {thread})", err=True)
    if status == "error":
        raise typer.Exit(1)
    if status == "cancelled":
        raise typer.Exit(130)


def new_thread_id() -> str:
    """A short random thread id."""
    return uuid.uuid4().hex[:12]


app.command()(serve)
app.command()(bench)
app.command()(stats)
app.command("tools")(list_tools)
app.command("settings")(print_settings)
app.add_typer(threads.app, name="threads")
app.command("prune")(prune.prune_command)

if __name__ == "__main__":
    app()
