"""The night written to tools a lab already uses (``autoresearch export ...``): read from the ledger and git,
never written back. Each exporter is an optional extra."""
