"""Parallelism: the device mesh, logical-axis rules and shardings (`mesh`), and multi-host start-up
(`distributed`)."""
