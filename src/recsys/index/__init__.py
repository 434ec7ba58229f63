"""The item index role: one interface, one module per engine, a factory reading settings."""
