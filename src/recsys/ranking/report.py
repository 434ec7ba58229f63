"""The base of every evaluation report: a pydantic model written out as indented JSON."""

from __future__ import annotations

from pydantic import BaseModel


class Report(BaseModel):
    def to_json(self) -> str:
        return self.model_dump_json(indent=2)
