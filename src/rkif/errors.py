class InputError(ValueError):
    """Bad user input (flag, file, record). Scripts print the message and exit non-zero."""
