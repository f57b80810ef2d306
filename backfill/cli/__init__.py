"""The thin click CLI: one module per command group, loaded only when invoked."""
