"""AutoKR daemon: watches inbox folders and runs one worker process per stage.

This package must never import torch, whisper or transformers: those live in ``workers``
and only ever run in worker subprocesses.
"""

__version__ = "0.1.0"
