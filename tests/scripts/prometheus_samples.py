#!/usr/bin/env python3
"""Parses Prometheus text exposition (stdin) with prometheus_client's own
parser and prints what it found, one line each, for tests/tests/metrics.rs:

    family<TAB>NAME<TAB>TYPE
    sample<TAB>FAMILY<TAB>NAME<TAB>LABELS as sorted JSON<TAB>VALUE

Exits 3 when prometheus_client is not installed, 1 when the text does not
parse (the parser's error on stderr)."""
import json
import sys

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError as e:
    print(f"prometheus_client not installed: {e}", file=sys.stderr)
    sys.exit(3)

if len(sys.argv) > 1 and sys.argv[1] == "--check":
    sys.exit(0)

try:
    families = list(text_string_to_metric_families(sys.stdin.read()))
except Exception as e:  # the parser raises ValueError and others
    print(f"unparsable exposition: {type(e).__name__}: {e}", file=sys.stderr)
    sys.exit(1)

for family in families:
    print(f"family\t{family.name}\t{family.type}")
    for sample in family.samples:
        labels = json.dumps(sample.labels, sort_keys=True, separators=(",", ":"))
        print(f"sample\t{family.name}\t{sample.name}\t{labels}\t{sample.value!r}")
