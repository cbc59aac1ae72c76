"""AutoKR stage workers. Each stage runs as ``python -m workers.<stage>`` in its own process.

Importing this package (or ``contract.protocol`` / ``contract.media``) is cheap and torch-free,
so the daemon may share those modules; the model libraries are imported only inside the
stage modules' ``main``.
"""
