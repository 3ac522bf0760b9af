"""The one base class of expected failures: bad flags, bad input, a refused run.

Entry points print such an error as one line, `error: <what>, <which file>`, and exit 1;
any other exception is a bug and keeps its traceback. Library modules subclass this for
their own errors (ConvertError, CnmcError, …) so every entry point treats them alike.
"""


class UserError(Exception):
    """An expected failure the user can act on; the message names the file or flag."""
