"""One module per CLI command: typer signature + a call into one library function."""
