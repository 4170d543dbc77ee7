"""The archive: every prediction, label, user and report, in MongoDB (or the embedded store)."""
