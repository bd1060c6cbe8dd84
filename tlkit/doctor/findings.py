"""What the doctor reports: findings with an id, a severity, what is wrong and the fix."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from tlkit.doctor.catalogue import Severity
from tlkit.errors import TlkitError

__all__ = ["DoctorError", "Finding", "Severity", "apply_policy", "format_findings", "has_errors"]


@dataclass(frozen=True)
class Finding:
    id: str  # stable, kebab-case, e.g. "lr-too-high": what doctor.silence takes; one of tlkit.doctor.catalogue
    severity: Severity
    message: str  # what is wrong and why it matters, with the values seen
    fix: str  # the override(s) that fix it, e.g. "optimizer.lr=1e-3"

    def to_dict(self) -> dict:
        return {**asdict(self), "severity": self.severity.value}


class DoctorError(TlkitError):
    """Pre-flight checks found errors; the message lists every finding."""

    def __init__(self, findings: list[Finding]):
        self.findings = findings
        super().__init__("the doctor found problems that would spoil training:\n" + format_findings(findings))


def apply_policy(findings: list[Finding], strict: bool, silence: list[str]) -> list[Finding]:
    """Drop silenced ids; with strict, warnings become errors."""
    kept = [f for f in findings if f.id not in set(silence)]
    if strict:
        kept = [Finding(f.id, Severity.error, f.message, f.fix) if f.severity == Severity.warning else f for f in kept]
    order = {Severity.error: 0, Severity.warning: 1, Severity.info: 2}
    return sorted(kept, key=lambda f: order[f.severity])


def has_errors(findings: list[Finding]) -> bool:
    return any(f.severity == Severity.error for f in findings)


def format_findings(findings: list[Finding]) -> str:
    if not findings:
        return "no findings: the setup looks right."
    lines = []
    for f in findings:
        lines.append(f"  [{f.severity.value}] {f.id}: {f.message}")
        lines.append(f"      fix: {f.fix}   (silence on purpose: doctor.silence=[{f.id}])")
    return "\n".join(lines)
