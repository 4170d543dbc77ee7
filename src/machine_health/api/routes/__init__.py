"""Route modules: thin `verb_noun` handlers; the work happens in scoring, archive and serving."""
