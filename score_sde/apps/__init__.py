"""The command-line programs, installed as ``score-sde-train``, ``score-sde-sample`` and
``score-sde-experiments`` (``pyproject.toml``); ``train.py`` / ``sample.py`` at the repository's
top level run the same mains. Each module owns its flags and files; ``run()`` parses the command
line (``cli.run``: one-line errors, a run's stored config as the default ``--config``)."""
