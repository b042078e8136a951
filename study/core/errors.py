"""The one exception for bad user input: the CLI turns it into one line on stderr and exit code 2."""


class ConfigError(ValueError):
    """Bad user input. The CLI turns it into one line on stderr and exit code 2."""
