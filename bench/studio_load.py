"""The service bench's graph for ``langgraph dev``: our graph over the paced bench model.

``agent_ng.bench.service`` writes a ``langgraph.json`` pointing here and sets ``BENCH_TOKENS`` and
``BENCH_RATE``; like ``agent_ng.graph.studio``, the graph is built at import (the platform reads the
module variable) and compiled without a checkpointer (the platform brings its own).
"""

import os

from agent_ng.bench.models import TokenModel
from agent_ng.graph.agent import build_graph
from agent_ng.settings import Settings

graph = build_graph(
    TokenModel(tokens=int(os.environ["BENCH_TOKENS"]), interval_s=1 / float(os.environ["BENCH_RATE"])),
    tools=[],
    settings=Settings(system_prompt=""),
)
