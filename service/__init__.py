"""The HTTP service: the agent's runs as Server-Sent Events (native and AG-UI), its threads,
health and metrics, and the live web page. ``agent_ng.service.app.create_app`` builds it."""
