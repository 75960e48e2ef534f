"""User-facing errors: one clear line, non-zero exit, no traceback."""


class UserError(Exception):
    """Bad input from the user (file, key, value): the CLI prints the message and exits 2."""
