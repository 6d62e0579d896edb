"""The contract: msgspec types for every request, response and log record."""
