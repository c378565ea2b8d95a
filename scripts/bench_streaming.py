#!/usr/bin/env python
"""paper_results/throughput/streaming.{md,csv,json}: the streaming image path's peak RSS and images/s against TLlib's
ImageList + DataLoader, on DomainNet-shaped synthetic trees of 10k / 50k / 100k JPEGs (dacl.analysis.streaming_throughput).

    git clone https://github.com/thuml/Transfer-Learning-Library /tmp/tllib
    python scripts/bench_streaming.py table --tllib /tmp/tllib --data /tmp/streaming_trees \
        --out paper_results/throughput/streaming
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dacl.analysis.streaming_throughput import main  # noqa: E402

if __name__ == "__main__":
    main()
