"""Parses metrics text from stdin with prometheus_client's two parsers (the Prometheus text
format and the stricter OpenMetrics one) and prints what they found as JSON.

Exit 1 with the parser's message when either parser rejects the text."""

import json
import sys

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families as prometheus_families


def describe(families):
    out = {}
    for fam in families:
        out[fam.name] = {
            "type": fam.type,
            "samples": [
                {"name": s.name, "labels": s.labels, "value": s.value} for s in fam.samples
            ],
        }
    return out


def main():
    text = sys.stdin.read()
    try:
        strict = describe(openmetrics_families(text))
        # the classic parser does not know the OpenMetrics end marker
        classic = describe(prometheus_families(text.replace("# EOF\n", "")))
    except Exception as e:  # the parsers raise ValueError and others: report any
        print(f"parse failed: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    json.dump({"openmetrics": strict, "prometheus": classic}, sys.stdout)


main()
