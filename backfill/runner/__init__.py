"""``backfill run``'s runner (spec §7, §14).

``machine`` drives one claimed window to its end, ``follow`` polls a created run until it ends,
``view`` reads a backfill's ledger back, ``reconcile`` settles a createRun in doubt from history,
``polling`` schedules status calls, and ``ports`` holds the protocols the runner works through
(ledger, claims, clock, the crash harness's step hook; the factory's is
``backfill.factory.protocol.Factory``).
"""
