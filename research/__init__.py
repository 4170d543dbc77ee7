"""Studies: scripts that choose settings (on validation data) through the project's public API."""
