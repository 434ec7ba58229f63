"""One router per resource; each parses, calls a service and shapes the response."""
