"""The one validation error every decoder raises: it carries a human-readable reason."""

from typing import Any

# msgspec raises RecursionError (not DecodeError) for JSON nested ~1000 levels deep: a few
# KB of "[[[[..." from anyone; it must be this reason, never a 500 or an "internal error"
TOO_DEEP = "payload: nested too deeply (JSON over ~1000 levels)"


class ValidationFailed(ValueError):
    """A payload that is not a valid message; ``reason`` names the field and the problem."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def decode_or_reason(decoder, raw: bytes):
    """Decode with a msgspec decoder; raise ValidationFailed naming the field and problem."""
    import msgspec

    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as e:
        raise ValidationFailed(field_reason(str(e))) from None
    except msgspec.DecodeError as e:
        raise ValidationFailed(f"payload: not valid JSON ({e})") from None
    except RecursionError:
        raise ValidationFailed(TOO_DEEP) from None


def decode_json(raw: bytes) -> Any:
    """Untyped JSON from outside (the gateway's bodies); ValidationFailed when it is not JSON
    or is nested too deeply to decode."""
    import msgspec

    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError as e:
        raise ValidationFailed(f"payload: not valid JSON ({e})") from None
    except RecursionError:
        raise ValidationFailed(TOO_DEEP) from None


def field_reason(msg: str) -> str:
    """msgspec says 'Expected `str`, got `int` - at `$.type`'; lead with the field instead."""
    if " - at `$." in msg:
        text, _, path = msg.rpartition(" - at `$.")
        return f"{path.rstrip('`')}: {text}"
    if msg.startswith("Object missing required field"):
        field = msg.split("`")[1] if "`" in msg else "?"
        return f"{field}: required field is missing"
    if msg.startswith("Object contains unknown field"):
        field = msg.split("`")[1] if "`" in msg else "?"
        return f"{field}: unknown field"
    return f"payload: {msg}"
