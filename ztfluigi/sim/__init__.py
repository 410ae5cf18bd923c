"""The synthetic ZTF instrument."""
