"""Throughput benchmarks (`swm bench ...`)."""
