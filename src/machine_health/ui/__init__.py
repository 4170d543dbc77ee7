"""The Streamlit inspection UI (`machine-health ui`): talks to the API over HTTP only."""
