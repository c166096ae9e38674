"""Each benchmark runs at its smoke size and writes a result of the expected shape.

No timing is asserted: these prove the programs run end to end (PostgreSQL included, the real
one) and that what they write can be read back, not how fast anything is.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent_ng.bench import load_client, scaling, scaling_ab, service
from agent_ng.bench.measure import Result, Table
from agent_ng.bench.report import markdown, update_readme
from agent_ng.bench.suite import MODULES, module, run_one
from agent_ng.cli.main import app
from tests.helpers.ports import free_port
from tests.helpers.system import missing, need

DATA_KEYS = {
    "streaming": {"tokens", "modes", "paths", "us_per_token_cpu", "ours_over_raw_us"},
    "first_token": {"delay_s", "paths", "ttft_ms", "overhead_ms"},
    "parallel": {"ns", "limits", "rows"},
    "checkpoints": {"savers", "per_step_ms", "load_ms", "resume_ms", "thread_bytes", "state_bytes"},
    "memory": {"runs", "py_per_run_kb", "rss_per_run_kb", "checkpointed"},
    "eta": {"seed", "calls", "estimators", "samples"},
    "service": {"rate", "tokens", "levels", "rounds", "rows", "runs", "idle_rss_mb"},
    "langgraph_server": {"rate", "tokens", "levels", "rounds", "rows", "runs", "idle_rss_mb"},
    "replicas": {"settings", "kills", "takeover_rows", "replicas", "tokens", "cost_rows", "cost_batches",
                 "idle_statements_per_s"},
    "scaling": {"rate", "tokens", "gap_bound_ms", "sides", "best", "probes"},
}
NEEDS = {"replicas": ("postgres", "redis"), "scaling": ("redis", "haproxy")}
"""The system parts a benchmark cannot run without (the others measure what they can reach)."""


def test_every_benchmark_is_covered_here():
    assert set(DATA_KEYS) == set(MODULES)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[Path, dict[str, Result]]:
    """Every benchmark run once at its smoke size; results written to a temporary directory."""
    out = tmp_path_factory.mktemp("bench-results")
    runnable = [name for name in MODULES if not any(missing(part) for part in NEEDS.get(name, ()))]
    return out, {name: run_one(name, "smoke", out_dir=out) for name in runnable}


@pytest.mark.parametrize("name", MODULES)
def test_smoke_run_writes_result_json(name, smoke):
    need(*NEEDS.get(name, ()))
    out, _ = smoke
    data = json.loads((out / f"{name}-latest.json").read_text())
    assert data["benchmark"] == name and data["size"] == "smoke"
    assert {"nproc", "cpu", "python", "versions"} <= set(data["machine"])
    assert data["machine"]["versions"]["langgraph"]
    assert data["duration_s"] > 0
    assert DATA_KEYS[name] <= set(data["data"])
    assert data["tables"]
    for table in data["tables"]:
        assert table["title"] and table["rows"]
        assert all(len(row) == len(table["columns"]) for row in table["rows"])
    assert len(list(out.glob(f"{name}-*.json"))) == 2, "a timestamped copy and -latest"


def test_parallel_rows_cover_every_side_and_n(smoke):
    out, results = smoke
    result = results["parallel"]
    rows = result.data["rows"]
    sides = {r["side"] for r in rows}
    assert sides == {
        "sequential", "create_agent", "create_agent, no saver", "ours, limit 1", "ours, limit 2",
        "ours, limit 2, durability async", "ours, limit 2, no saver", "ours, limit 2, SQLite tool store",
    }
    assert {(r["kind"], r["n"]) for r in rows} == {(k, n) for k in ("await", "cpu") for n in (1, 2)}
    assert all(r["wall_ms"] > 0 and r["efficiency"] > 0 for r in rows)
    assert result.plots == [str(out / "parallel.png")]
    assert (out / "parallel.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.needs("postgres")
def test_checkpoints_used_postgres(smoke):
    """The smoke run reached the real PostgreSQL, not only the in-process savers."""
    result = smoke[1]["checkpoints"]
    assert result.data["savers"] == [
        "none", "memory", "sqlite", "sqlite, no load memo", "postgres", "postgres, no load memo"
    ], result.data["skipped"]
    assert result.data["thread_bytes"]["postgres"] > 0


def test_unknown_benchmark_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown benchmark 'nope'.*streaming"):
        module("nope")
    result = CliRunner().invoke(app, ["bench", "nope"])
    assert result.exit_code == 2
    assert "unknown benchmark" in result.output


def test_readme_block_is_replaced_not_duplicated_and_plots_copied_beside_it(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\nintro stays\n")
    plot = tmp_path / "results" / "demo.png"
    plot.parent.mkdir()
    plot.write_bytes(b"\x89PNG fake")
    first = Result("demo", "smoke", [Table("T", ["a", "b"], [["x", 1.5]])], {})
    second = Result("demo", "smoke", [Table("T", ["a", "b"], [["y", 2.25]])], {}, plots=[str(plot)])

    update_readme(first, readme)
    update_readme(second, readme)

    text = readme.read_text()
    assert text.startswith("# Benchmarks\n\nintro stays\n")
    assert text.count("<!-- bench:demo -->") == 1
    assert "| y | 2.25 |" in text and "| x |" not in text
    assert second.machine["cpu"] in markdown(second)
    assert "![demo](demo.png)" in text
    assert (tmp_path / "demo.png").read_bytes() == b"\x89PNG fake"


def test_eta_scores_the_start_estimate_and_each_progress_report(smoke):
    data = smoke[1]["eta"].data
    assert data["calls"] == 20 and len(data["samples"]) == 20
    estimators = data["estimators"]
    assert "tool_start (history median)" in estimators
    for fraction in ("25%", "50%", "75%"):
        assert f"progress {fraction}, blend (reported)" in estimators
    assert all(e["n"] > 0 and e["mae_ms"] >= 0 and e["relative"] >= 0 for e in estimators.values())
    assert all(len(s["reports"]) == 3 and s["actual_s"] > 0 for s in data["samples"])


def test_service_streams_came_back_whole_from_ours_and_from_langgraph_dev(smoke):
    out, results = smoke
    result = results["service"]
    rows = result.data["rows"]
    assert [(r["server"], r["k"]) for r in rows] == [
        ("ours (agent-ng serve)", 3), ("langgraph dev", 3)
    ]
    for row in rows:
        assert row["errors"] == 0, row["error_kinds"]
        assert row["server_cpu_s"] > 0 and row["server_rss_peak_mb"] > 0
        assert row["client_cpu_s"] > 0
        assert 0 < row["headers_p50_ms"] <= row["ttft_p50_ms"] <= row["ttft_p99_ms"]
    assert (out / "service.png").read_bytes().startswith(b"\x89PNG")


async def test_load_client_counts_tokens_and_names_what_went_wrong():
    """The client's count is what makes a stream whole: one token short is an error."""
    async with service.ours(tokens=3, rate=200.0) as server:
        whole = await load_client.main("ours", server.url, 2, 3)
        short = await load_client.main("ours", server.url, 1, 4)
    closed = f"http://127.0.0.1:{free_port()}"
    refused = await load_client.main("ours", closed, 1, 3)

    assert [s["error"] for s in whole["streams"]] == ["", ""]
    assert all(len(s["gaps_s"]) == 2 and s["ttft_s"] >= s["headers_s"] > 0 for s in whole["streams"])
    assert [s["error"] for s in short["streams"]] == ["3 of 4 tokens"]
    assert [s["error"] for s in refused["streams"]] == ["ConnectionRefusedError"]


async def test_load_client_reads_a_chunked_stream_however_the_bytes_arrive():
    """A token's data line, a chunk's size line or its closing CRLF split across reads
    (one byte at a time here) is read as if it came whole."""
    events = b"".join(
        b"event: %s\r\ndata: {\"n\": %d}\r\n\r\n" % (kind, n)
        for n, kind in enumerate([b"run_start", b"content", b"content", b"tool_start", b"content"])
    )
    body = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (events[:7], events[7:60], events[60:]))
    response = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + body + b"0\r\n\r\n"
    reader = load_client._Reader(load_client.ours_token)
    for i in range(len(response)):
        reader.data_received(response[i : i + 1])

    assert reader.done.done() and reader.done.exception() is None
    assert (reader.status, len(reader.times)) == (200, 3)


def test_streaming_reads_our_sse_endpoint_to_the_last_token(smoke):
    data = smoke[1]["streaming"].data
    assert "ours, SSE read by httpx" in data["paths"]
    assert data["chunks_seen"]["ours, SSE read by httpx@50"] == 50


@pytest.mark.needs("redis", "haproxy")
def test_scaling_sides_are_the_topologies_they_name_and_stream_whole_answers(smoke):
    """One process is one; ``--workers 2`` is uvicorn's parent and two workers (and
    multiprocessing's resource tracker); the replicas are two processes and HAProxy: each side's
    CPU is sampled from the processes it claims."""
    out, results = smoke
    data = results["scaling"].data
    processes = {"one process": 1, "one process, Redis log": 1, "--workers 2": 4, "2 replicas + HAProxy": 3}
    assert data["sides"] == list(processes)
    for probe in data["probes"]:
        assert probe["errors"] == 0, probe["error_kinds"]
        assert probe["tokens_per_s"] > 0 and probe["server_cores"] > 0
        assert len(probe["process_cores"]) == processes[probe["side"]]
    assert {p["side"] for p in data["probes"]} == set(processes)
    assert (out / "scaling.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.needs("redis")
async def test_scaling_ab_serves_a_side_from_this_install_and_from_another_checkout():
    """The before/after command: a tree of this install and one of another checkout (here this
    repository's own), each its own servers, every level probed once per tree and round."""
    root = Path(__file__).resolve().parents[2]
    result = await scaling_ab.run(scaling.BASELINE, [2], 2, [root], size="smoke")
    trees = result.data["trees"]
    assert trees[0] == "this install" and trees[1].startswith(f"{root.name} (")
    assert sorted(p["tree"] for p in result.data["probes"]) == sorted(trees * 2)
    for probe in result.data["probes"]:
        assert probe["errors"] == 0 and probe["tokens_per_s"] > 0, probe
    assert [row[:2] for row in result.tables[0].rows] == [[tree, 2] for tree in trees]
