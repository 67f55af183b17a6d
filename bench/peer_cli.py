"""The command line every ingestion peer (bench/ingest_pandas.py, bench/ingest_duckdb.py) shares.

bench/ingest.py runs each peer in its own process as
`python bench/ingest_<engine>.py --input <delivery> --out <folder> --city-file <yaml>` and reads the
one JSON line it prints (counts and seconds).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path


def peer_main(
    doc: str, script: str, run: Callable[[Path, Path, Path, str], dict], argv: list[str] | None = None
) -> int:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, help="delivery folder of Porto CSV files")
    parser.add_argument("--out", type=Path, help="output folder for the Parquet files")
    parser.add_argument("--city-file", type=Path, help="city YAML (bbox and cleaning thresholds)")
    parser.add_argument("--date", default="2013-07-01")
    args = parser.parse_args(argv)
    if not (args.input and args.out and args.city_file):
        print(f"{script} is a peer run by bench/ingest.py; run that (or pass --input --out --city-file)")
        return 0
    print(json.dumps(run(args.input, args.out, args.city_file, args.date)))
    return 0
