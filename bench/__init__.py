"""Benchmarks: streaming cost, time to first token, parallel tools, checkpoints, memory.

    python -m agent_ng.bench                 # all, full size; tables printed, JSON in bench/results/
    agent-ng bench parallel --smoke # one, tiny

See bench/README.md for what each measures and the latest numbers.
"""
