"""Test doubles shared by the test suite. See ``llm_servers`` for the loopback fake LLM APIs."""
