"""The benchmarks (`recsys bench ...`): above the parts they measure, which never import
them. Each prints a table and writes JSON; docs/benchmarks.md records the results."""
