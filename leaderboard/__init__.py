"""The A2F-Bench local leaderboard: evaluated results beside reported claims (docs/leaderboard.md).

Modules: ``model`` (metadata and reported rows), ``db`` (SQLite store, migrations, submissions), ``submit``
(validate / verify / store a results file), ``ranking`` (ranks, paired-bootstrap ties, Borda), ``render``
(terminal, JSON, HTML), ``server`` (``serve``), ``cli`` (``a2fbench leaderboard ...``), ``synthetic``
(valid results documents for tests and benchmarks).
"""
