"""The prediction API (FastAPI): app factory in `app.py`, one router module per concern."""
