"""Embedded engines (Valkey, Tansu) started on loopback, and how commands find them."""
