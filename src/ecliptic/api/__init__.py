"""The REST API (``/api/v1``): parse, call one service, render."""
