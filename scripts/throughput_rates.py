"""Condense the committed throughput records (cat_bench.costs.SOURCES) into the planner's measured rates.

    python scripts/throughput_rates.py      # writes cat_bench/assets/throughput.json

Run it after committing a new benchmark record or GPU run and adding it to SOURCES;
tests/test_costs.py checks that the asset is what the records give.
"""

from pathlib import Path

from cat_bench.costs import write_rates

if __name__ == "__main__":
    print(write_rates(Path(__file__).resolve().parents[1]))
