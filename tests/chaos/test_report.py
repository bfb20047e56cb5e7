"""docs/reliability.md's renderer: storage rows as before, serving rows with their figures."""

from __future__ import annotations

from typing import Any

from chaos.report import GUARANTEE_TEXT, render


def line(group: str, scenario: str, outcome: str, violations: dict[str, int], **extra: Any) -> dict[str, Any]:
    return {"test": "t", "group": group, "scenario": scenario, "outcome": outcome, "violations": violations,
            "faults": extra.pop("faults", {}), "at": 1_700_000_000, **extra}  # fmt: skip


STRESS = "Serving under stress"
FUZZ = {"server deaths": 0, "wrong answers": 0, "bad refusals": 0}
LINES = [
    line("Malformed requests", "random bytes", "refused 500 (Triton could not parse the body)", FUZZ, bytes=3),
    line("Malformed requests", "random bytes", "refused 400", FUZZ, bytes=2048),
    line("Storage faults", "S3 store", "stored", {"corrupt objects": 0}, faults={"error_503": 2, "delay": 1},
         requests=5),
    *(line(STRESS, "stub killed under load", "model reloaded, serving again",
           {"slow or no recovery": 0, "requests failed after recovery": 0}, recovery_s=seconds, requests=100, failed=4,
           during_reload={"answered": 6, "failed": 3}) for seconds in (5.0, 4.0, 6.5)),
    line(STRESS, "overload", "served what it could", {"timeouts": 0, "slow refusals": 0},
         statuses={"200": 70, "503": 900}, refusal_ms={"median": 16.4, "p99": 57.1}),
    line(STRESS, "sustained", "served throughout, memory bounded",
         {"failed requests under steady load": 0, "memory growth over bound": 1}, load_s=300.0, requests=40000,
         failed=0, rss_mb={"first": 677.5, "last": 750.0, "max": 751.2, "bound": 64, "tenths": [670, 700, 750]}),
    line(STRESS, "64 MB body", "no answer, Triton died, restarted by nexus serve", {"slow or no recovery": 0},
         recovery_s=5.3),
]  # fmt: skip


def test_serving_rows_show_recovery_failures_answers_and_memory() -> None:
    report = render(LINES, "50", "", {"SUSTAINED_S": "300", "FUZZ_EXAMPLES": "2000"})

    assert "`make reliability CHAOS_ITERATIONS=50 SUSTAINED_S=300 FUZZ_EXAMPLES=2000`" in report
    assert "**1 broken guarantees**" in report
    rows = {row.split(" | ")[0].lstrip("| "): row for row in report.splitlines() if " × " in row}  # not the matrix
    assert rows["stub killed under load"] == (
        "| stub killed under load | 3 | 3 × model reloaded, serving again | recovery median 5.0 s, max 6.5 s; "
        "12 of 300 requests failed; sent between the kill and the reload: 9 failed, 18 answered |"
    )
    assert rows["overload"].endswith("| answers: 900 × 503, 70 × 200; 503 after 16 ms median, 57 ms p99 |")
    assert rows["sustained"].endswith(
        "| 0 of 40000 requests failed in 300 s; Triton + stubs RSS 678 → 750 MB (+72 MB, bound +64 MB; max 751 MB), "
        "by tenth of the run: 670, 700, 750 MB |"
    )
    assert rows["64 MB body"].endswith("| recovery 5.3 s |")
    assert rows["random bytes"] == (
        "| random bytes | 2 | 1 × refused 500 (Triton could not parse the body), 1 × refused 400 | "
        "bodies of 3 B to 2.0 KiB |"
    )


def test_storage_rows_render_as_before_and_groups_keep_their_order() -> None:
    report = render(LINES, None, "")

    assert "| S3 store | 1 | 1 × stored | faults injected in 5 requests: 2 × 503 (S3 SlowDown / GCS backendError), " \
        "1 × delayed |" in report  # fmt: skip
    headings = [row for row in report.splitlines() if row.startswith("## ")]
    assert headings[:3] == ["## Storage faults", f"## {STRESS}", "## Malformed requests"]
    # the broken guarantee is bold in its column; a guarantee the scenario does not check is "–"
    assert "| sustained | – | – | – | – | 0 | **1** |" in report


def test_every_guarantee_a_record_names_is_explained() -> None:
    report = render(LINES, None, "")

    for name in {name for record in LINES for name in record["violations"]}:
        assert name in GUARANTEE_TEXT
        assert f"- **{name}**: {GUARANTEE_TEXT[name]}." in report
