"""The evidence report of one backfill: ``build`` (the data), ``text`` and ``html`` (its two forms)."""
