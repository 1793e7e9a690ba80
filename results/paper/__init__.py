"""Data-only package: the paper's published Tables 1-4, 7, 8 as CSV (see README.md; read by cat_bench.paper)."""
