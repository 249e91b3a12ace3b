"""`UserError`: a mistake in what the user gave (a file, an argument). The CLI prints its message as one
line and exits non-zero, with no traceback; a bug in rnnkit still raises normally."""


class UserError(Exception):
    """One clear line naming the file, line or argument and what was expected."""
