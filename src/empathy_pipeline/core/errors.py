"""One exception type for every expected failure: its message is the one line the user sees."""


class PipelineError(Exception):
    """Bad input or configuration. The message says what and where, in one line."""
