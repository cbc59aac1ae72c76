"""What the daemon and the workers agree on, imported by both and importing neither: the
worker protocol (events, exit codes, stages), the error root, languages, the media probe,
fault-injection points and the file helpers. ``tests/unit/test_imports.py`` keeps it so."""
