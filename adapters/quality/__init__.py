"""Quality tools run as subprocesses with machine-readable output: ruff, bandit, semgrep where
it is installed, and a repository's own tests in a sandbox."""
