"""The doctor: catches known transfer-learning mistakes before and during training.

Pre-flight, cheapest first: the config alone (no TensorFlow), then the data, then the
built model. During training: RuntimeMonitor (tlkit.doctor.monitor). Each finding has an
id, a severity, a message and the override that fixes it; `doctor.silence=[id]` drops one
on purpose and `doctor.strict=true` turns warnings into errors. Every id, with its severities, phase and meaning,
is in tlkit.doctor.catalogue (`tlkit doctor --list`).

The checks may import the recipe and everything below it, nothing of training, the tools or the command lines.
The catalogue sits lower, beside tlkit.config (whose validation refuses an unknown id in doctor.silence): it, this
file and tlkit.doctor.findings import only tlkit.text_table and tlkit.errors at import time (tests/test_layers.py).
"""
from __future__ import annotations

import logging

from tlkit.doctor.findings import DoctorError, Finding, Severity, apply_policy, format_findings, has_errors

log = logging.getLogger("tlkit.doctor")

__all__ = ["Doctor", "DoctorError", "Finding", "Severity", "format_findings", "has_errors"]


class Doctor:
    """Collects findings phase by phase under the configured policy (strict, silence)."""

    def __init__(self, strict: bool = False, silence: list[str] | tuple[str, ...] = ()):
        self.strict = strict
        self.silence = list(silence)
        self.findings: list[Finding] = []

    def record(self, findings: list[Finding]) -> list[Finding]:
        kept = apply_policy(findings, self.strict, self.silence)
        self.findings.extend(kept)
        return kept

    def config(self, cfg, spec) -> list[Finding]:
        from tlkit.doctor.config_checks import diagnose_config

        return self.record(diagnose_config(cfg, spec))

    def data(self, cfg, spec, data, probe=None) -> list[Finding]:
        from tlkit.doctor.data_checks import diagnose_data

        return self.record(diagnose_data(cfg, spec, data, probe=probe))

    def model(self, cfg, model, data) -> list[Finding]:
        from tlkit.doctor.model_checks import diagnose_model

        return self.record(diagnose_model(cfg, model, data))

    def data_and_model(self, cfg, spec, data, model, probe=None) -> list[Finding]:
        """The checks that need the data and the built model; `probe`: the recipe's tlkit.recipe.probe.ProbeResult."""
        return self.data(cfg, spec, data, probe=probe) + self.model(cfg, model, data)

    def raise_on_errors(self, findings: list[Finding]) -> None:
        if has_errors(findings):
            raise DoctorError([f for f in findings if f.severity == Severity.error])

    def log_findings(self, findings: list[Finding]) -> None:
        for f in findings:
            level = logging.ERROR if f.severity == Severity.error else (
                logging.WARNING if f.severity == Severity.warning else logging.INFO)
            log.log(level, "%s: %s (fix: %s)", f.id, f.message, f.fix)

    def to_dict(self) -> list[dict]:
        return [f.to_dict() for f in self.findings]
