"""`recsys simulate`: realistic purchase and recommendation traffic against a local API,
with latency, throughput, error and freshness figures."""

from simulator.config import SimulationConfig, SimulatorError
from simulator.report import SimulationReport, report_table
from simulator.run import simulate

__all__ = ["SimulationConfig", "SimulationReport", "SimulatorError", "report_table", "simulate"]
