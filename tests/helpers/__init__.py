"""What several test modules share: data trees, tiny models and fits, CLI arguments.

Test modules import helpers from here (or use the fixtures of a `conftest.py`), never from
another test module: `tests/test_import_graph.py` checks it."""
