"""placeholder"""
SCHEMA: dict[str, object] = {}
