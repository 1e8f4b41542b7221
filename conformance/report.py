"""The report of ``castway check``: text for people, JSON for CI."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from castway.hls.findings import Finding, Severity
from conformance.follow import Run

#: Occurrences of one rule on one playlist shown in the text report (JSON has them all).
SHOWN_PER_RULE = 3


def to_json(run: Run, findings: list[Finding]) -> str:
    body: dict[str, Any] = {
        "url": run.url, "master": run.master, "live": run.live,
        "renditions": run.renditions, "seconds": round(run.seconds, 3),
        "playlists_fetched": run.playlists, "segments_checked": run.segments,
        "violations": sum(f.severity is Severity.VIOLATION for f in findings),
        "warnings": sum(f.severity is Severity.WARNING for f in findings),
        "findings": [{"rule": f.rule.value, "severity": f.severity.value, "spec": f.spec,
                      "subject": f.subject, "message": f.message,
                      "lines": [{"url": ln.url, "line": ln.number, "text": ln.text}
                                for ln in f.lines]} for f in findings]}
    return json.dumps(body, indent=2)


def to_text(run: Run, findings: list[Finding]) -> str:
    kind = "live" if run.live else "VOD/ended"
    out = [f"castway check {run.url}",
           f"  {kind}, {len(run.renditions)} rendition(s), followed {run.seconds:.1f} s: "
           f"{run.playlists} playlists, {run.segments} segments checked", ""]
    groups: dict[tuple[str, str], list[Finding]] = defaultdict(list)
    for finding in findings:
        groups[(finding.rule.value, finding.subject)].append(finding)
    ordered = sorted(groups.items(), key=lambda kv: (kv[1][0].severity is not
                                                     Severity.VIOLATION, kv[0]))
    for (rule, subject), group in ordered:
        head = group[0]
        out.append(f"{head.severity.value.upper()} {rule}  [{head.spec}]")
        out.append(f"  in {subject}")
        for finding in group[:SHOWN_PER_RULE]:
            out.append(f"  - {finding.message}")
            out.extend(f"      {line}" for line in finding.lines)
        if len(group) > SHOWN_PER_RULE:
            out.append(f"  ... and {len(group) - SHOWN_PER_RULE} more like these")
        out.append("")
    violations = sum(f.severity is Severity.VIOLATION for f in findings)
    warnings = len(findings) - violations
    out.append(f"{violations} violation(s), {warnings} warning(s)"
               + ("" if violations else ": conforms"))
    return "\n".join(out)
