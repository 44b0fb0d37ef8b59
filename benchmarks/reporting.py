"""How every benchmark script prints its result: one JSON object with --json, else aligned key/value lines."""

from __future__ import annotations

import json


def print_result(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
        return
    width = max(len(key) for key in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
