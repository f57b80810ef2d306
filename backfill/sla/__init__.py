"""SLA and duration-drift evidence per business date (spec §13, issue 13).

``model`` reads an SLA file, ``calendar`` turns business dates into UTC deadlines (each in its
own offset, so DST is right), ``days`` gives each date its status from the pipeline's runs,
``drift`` compares recent durations with a baseline (Theil–Sen slope, projected miss), ``report``
puts them together and ``text``/``html`` render it; all pure. ``backfill.services.sla`` is the use
case the CLI calls (it syncs and reads the history cache and asks the factory).
"""
