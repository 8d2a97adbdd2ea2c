"""Benchmarks (`avatar-jax bench NAME`): timings are measured, printed and written as JSON."""
