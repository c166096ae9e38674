"""The tool engine: the wrappers every tool call goes through (ordered in ``engine.chain``) and their store."""
