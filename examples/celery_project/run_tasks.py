"""Call the tasks and wait for their results, as the tutorial does in a Python shell."""

from __future__ import annotations

from tasks import add, fetch, mul, xsum

result = add.delay(4, 4)
print("add(4, 4) =", result.get(timeout=10))
print("state:", result.state, "| ready:", result.ready(), "| successful:", result.successful())

print("mul(6, 7) =", mul.delay(6, 7).get(timeout=10))
print("xsum([1, 2, 3, 4]) =", xsum.apply_async(([1, 2, 3, 4],)).get(timeout=10))
print("fetch:", fetch.delay("https://example.com").get(timeout=30))
