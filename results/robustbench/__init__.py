"""Data-only package: RobustBench leaderboard entries as reference rows (see README.md; read by cat_bench.references)."""
