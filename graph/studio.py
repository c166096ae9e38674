"""The graph that ``langgraph dev`` (LangGraph Studio) and the LangGraph Platform serve.

``langgraph.json`` points here (``agent_ng.graph.studio:graph``). The platform reads the variable from
the module's namespace, so it must exist once the module is imported: importing this module
builds the graph. It is compiled without a checkpointer, because the platform brings its own.
"""

from agent_ng.graph.agent import build_graph

graph = build_graph()
