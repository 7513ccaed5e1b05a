"""The one exception class for mistakes a user can fix (a path, a flag, a config value, unusable
data or checkpoints). Its message names the problem and the fix in a line or two; the
command-line tools print it and exit with status 2 (``runtime.run_cli``): a traceback is for
bugs. Subclasses say where the mistake was found (``DataError``, ``TaskInputError``, ...)."""


class UserError(ValueError):
  """A mistake the user can fix; the message says what to do."""
