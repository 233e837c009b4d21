"""Code shared by the operator and both jobs: configuration, logging, progress, storage."""
