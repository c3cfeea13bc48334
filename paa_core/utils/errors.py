"""The one error type the tools report as a single line: something the user can fix
(a bad config value, dataset file or weight file, a full disk, a stopped or diverged run)."""


class InputError(Exception):
    """Printed by the tools as `error: <message>` with exit code 1, no traceback.

    Raised inside a DataLoader worker, it reaches the main process re-created with the
    worker's traceback as its message; the constructor keeps only the original line,
    so every process reports the same one line.
    """

    def __init__(self, message):
        message = str(message)
        if message.startswith("Caught InputError in DataLoader worker"):
            message = message.rstrip().splitlines()[-1].split("InputError: ", 1)[-1]
        super().__init__(message)
