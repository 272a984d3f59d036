"""The one validation error every decoder raises: it carries a human-readable reason."""


class ValidationFailed(ValueError):
    """A payload that is not a valid message; ``reason`` names the field and the problem."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
