"""The one exception type hfcompress raises for bad input.

It subclasses ``ValueError`` so callers that already catch ``ValueError`` keep working. Messages are one
line and say what was given and what is allowed; recipes print them without a traceback.
"""


class HfCompressError(ValueError):
    """Bad input or an unusable artifact: the message says what was wrong and what is allowed."""
