"""The ``agent-ng`` command: ask a question, or chat, and watch the run live.

    agent-ng ask "what is 17*23 and how many primes are below 200000?"
    agent-ng ask "what did I ask before?" --thread demo
    agent-ng chat --thread demo
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

from cli.bench import bench
from cli.view import PlainView, TurnView
from graph.agent import build_graph
from graph.checkpoint import open_checkpointer
from graph.events import stream
from graph.settings import Settings

app = typer.Typer(help="A LangGraph agent that shows everything as it happens.", no_args_is_help=True)
app.command()(bench)

Thread = Annotated[str | None, typer.Option("--thread", "-t", help="Thread id to continue (default: a new thread).")]


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="What to ask.")],
    thread: Thread = None,
) -> None:
    """Ask one question; the answer and each tool stream live."""
    thread = thread or new_thread_id()
    status = asyncio.run(converse([question], thread))
    finish(thread, status)


@app.command()
def chat(thread: Thread = None) -> None:
    """Talk in a loop on one thread (empty line or Ctrl-D ends)."""
    thread = thread or new_thread_id()
    status = asyncio.run(converse(prompts(), thread))
    finish(thread, status)


def prompts():
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
    settings = Settings()
    status = None
    async with open_checkpointer(settings.checkpoint_url) as saver:
        graph = build_graph(checkpointer=saver, settings=settings)
        config = {"configurable": {"thread_id": thread}}
        for question in questions:
            status = await show_turn(graph, question, config)
    return status


async def show_turn(graph, question: str, config: dict) -> str | None:
    console = Console()
    events = stream(graph, {"messages": [HumanMessage(question)]}, config)
    if not console.is_terminal:
        view = PlainView(sys.stdout)
        async for event in events:
            view.handle(event)
        return view.status
    view = TurnView()
    with Live(view, console=console, refresh_per_second=15, transient=False):
        async for event in events:
            view.handle(event)
    return view.status


def finish(thread: str, status: str | None) -> None:
    typer.echo(f"\n(thread {thread}; continue with --thread {thread})", err=True)
    if status == "error":
        raise typer.Exit(1)


def new_thread_id() -> str:
    return uuid.uuid4().hex[:12]


if __name__ == "__main__":
    app()
