"""cxlnet vs transformers benchmarks (`make bench` = `python -m benchmarks.run`); see README.md."""
