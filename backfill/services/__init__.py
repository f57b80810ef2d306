"""The use cases: what each command (and, later, the console) asks of backfill, written once.

One module per concern: ``plans`` (check, history sync, the one preview), ``review`` (request,
approve, reject), ``run`` (run, stop), ``status`` (state, report), ``ledger``, ``runs``, ``sla``. Every
function takes plain values and the acting identity, opens and closes the ledger database itself
(``store.database.opened``) unless the caller passes one it holds (``db=``), and returns a typed
result; none prints or imports click. The CLI parses, calls one function, prints. The errors they
raise are the ``BackfillError`` family, whose exit codes the spec gives.
"""
