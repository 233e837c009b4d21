"""Real servers and tools for tests, the local demo and benchmarks."""
