#!/usr/bin/env python3
"""Asks the voxrelay simulator's Responses API for a call summary with the official OpenAI
Python SDK, as the relay does after each call, and validates the raw answer against the SDK's
own model (openai.types.responses.Response, strict pydantic validation) and its `output_text`.

Usage: responses_conformance.py --base-url http://127.0.0.1:PORT
Exit status 0 on success; 1 with a report on stderr otherwise.
"""

import argparse
import json
import sys

try:
    import openai
    from openai import OpenAI
    from openai.types.responses import Response
    from pydantic import ValidationError
except ImportError as exc:  # pragma: no cover - setup problem, reported plainly
    print(f"missing Python packages ({exc}); run: pip install -r tests/conformance/requirements.txt", file=sys.stderr)
    sys.exit(2)

TRANSCRIPT = (
    "caller: Hello, I'd like to book a check-up.\n"
    "agent: Tuesday at nine is free. Shall I book it?\n"
    "caller: Yes please.\n"
    "[schedule: booked KTH472 on 2026-12-08 at 09:00]"
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base-url", required=True)
    args = ap.parse_args()
    client = OpenAI(api_key="sk-conformance", base_url=args.base_url.rstrip("/") + "/v1", max_retries=0)
    failures = []
    answers = []
    for given in (
        TRANSCRIPT,
        [{"role": "user", "content": [{"type": "input_text", "text": TRANSCRIPT}]}],
    ):
        raw = client.responses.with_raw_response.create(
            model="gpt-4.1-mini",
            instructions="Summarise the call for the front desk.",
            input=given,
            max_output_tokens=400,
            store=False,
        )
        body = json.loads(raw.text)
        try:
            Response.model_validate(body, strict=False)
        except ValidationError as e:
            failures.append(f"the answer does not validate as a Response: {e}")
        parsed = raw.parse()
        answers.append(parsed.output_text)
        if "booked KTH472 on 2026-12-08 at 09:00" not in parsed.output_text:
            failures.append(f"output_text misses the booking: {parsed.output_text!r}")
        if parsed.status != "completed" or parsed.usage is None or parsed.usage.total_tokens <= 0:
            failures.append(f"status or usage wrong: {parsed.status} {parsed.usage}")
    # a request without input is refused as OpenAI refuses it
    try:
        client.responses.create(model="gpt-4.1-mini", input=[{"role": "user", "content": 3}])
        failures.append("a bad input was accepted")
    except openai.BadRequestError as e:
        if e.body is None or "input" not in json.dumps(e.body):
            failures.append(f"the 400 does not name the input: {e.body}")
    report = {"openai": openai.__version__, "answers": answers, "failures": failures}
    print(json.dumps(report, indent=1))
    if failures:
        for f in failures:
            print(f, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
