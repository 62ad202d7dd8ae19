"""The one error a user sees: what went wrong and how to fix it, without a traceback."""


class AtlasError(Exception):
    """A problem with the user's input (config, model, checkpoint) that stops the build.

    Its message is one paragraph that names the problem and the fix; the command line
    prints it as it is.
    """
