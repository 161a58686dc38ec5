"""The one exception type for bad user input: the CLI prints it as a one-line error and exits 1."""


class InputError(ValueError):
    """Bad input from the user: a wrong path, a corrupt checkpoint, an out-of-range ratio, ..."""
