"""Thin HTTP handlers: parse, authorize, call a service in a transaction, shape the answer."""
