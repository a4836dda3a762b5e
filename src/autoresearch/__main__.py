from autoresearch.cli import app

app()
