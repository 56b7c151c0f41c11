"""`raypipe curate --policy-from MANIFEST`: measure, approve, apply. The policy of an earlier run (its thresholds,
suspect references and every setting a decision depends on) is applied to this input instead of measuring a new one.

The frozen settings are the scoring settings (lexicon, segmenter, proxy, grading), the policy settings and the audit
settings, less those that only change how a job runs: they are taken from the earlier manifest whatever this run was
given, and the ones given explicitly that differ are named (`overridden`). No Ray here.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from raypipe.core import io
from raypipe.core.policy import Policy, PolicySettings
from raypipe.core.scoring import ScoringConfig
from raypipe.core.versions import DECISION_VERSIONS, versions
from raypipe.curate.audit import ReferenceAuditSettings
from raypipe.curate.config import CurateConfig
from raypipe.curate.groupby import REFERENCE_DIR

FROZEN_FIELDS = tuple(sorted(
    (set(ScoringConfig.model_fields) | set(PolicySettings.model_fields) | set(ReferenceAuditSettings.model_fields))
    - set(CurateConfig.EXECUTION_FIELDS)))


@dataclass
class Earlier:
    """The run a policy comes from."""

    uri: str  # its manifest.json
    manifest: dict
    overridden: dict[str, list] = field(default_factory=dict)  # setting -> [given here, the policy's]
    versions_differ: dict[str, list] = field(default_factory=dict)  # decision version -> [the policy's, here]

    @property
    def fingerprint(self) -> str | None:
        return self.manifest.get("input_fingerprint")

    def policy(self) -> Policy:
        return Policy.model_validate(self.manifest["policy"])

    def record(self, fingerprint: str) -> dict:
        """What the manifest says of it (`policy_from`)."""
        return {"manifest": self.uri, "config_hash": self.manifest.get("config_hash"),
                "fingerprint": self.fingerprint,
                "fingerprint_matches": None if self.fingerprint is None else self.fingerprint == fingerprint,
                "overridden": self.overridden, "versions_differ": self.versions_differ}

    def describe(self) -> list[str]:
        """Which policy a run applies, which settings given here it overrides, and versions that differ."""
        p = self.policy()
        lines = [f"--policy-from {self.uri}: its policy is applied (rule {p.rule}, proxy {p.proxy}, drop_top "
                 f"{p.drop_top:g}, thresholds of {len(p.thresholds)} sources, {len(p.suspect_references)} references "
                 "kept out): phase 2 finds duplicates and audits the references but measures no thresholds"]
        if self.overridden:
            lines.append("--policy-from: the policy's settings win over the ones given here: " + ", ".join(
                f"{k} {given!r} -> {used!r}" for k, (given, used) in sorted(self.overridden.items())))
        if self.versions_differ:
            lines.append("--policy-from: the policy was measured with other versions (then, now), so decisions may "
                         f"differ: {self.versions_differ}")
        return lines


def manifest_uri(uri: str) -> str:
    return uri if uri.endswith(".json") else io.join(uri, "manifest.json")


def folder_of(uri: str) -> str:
    """The folder a manifest lies in (its run's output)."""
    return (uri.rsplit("/", 1)[0] or "/") if "/" in uri else "."


def read(uri: str, storage: io.Storage) -> dict:
    text = io.read_text(uri, storage)
    if text is None:
        raise FileNotFoundError(f"--policy-from: no manifest at {uri}")
    try:
        manifest = json.loads(text)
        Policy.model_validate(manifest["policy"])
        manifest["config"].items()
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"--policy-from {uri} is not a curation manifest: {type(e).__name__}: {e}") from None
    return manifest


def apply(config: CurateConfig, storage: io.Storage) -> tuple[CurateConfig, Earlier]:
    """The config with the earlier run's frozen settings, and that run. A setting its manifest does not record
    (one added since) had its default there."""
    uri = manifest_uri(config.policy_from)
    manifest = read(uri, storage)
    policy = {k: v for k, v in manifest["policy"].items() if k in PolicySettings.model_fields}
    recorded, defaults = {**manifest["config"], **policy}, CurateConfig._defaults()
    frozen = {k: recorded.get(k, defaults.get(k)) for k in FROZEN_FIELDS}
    here = config.model_dump(mode="json")
    overridden = {k: [here[k], v] for k, v in frozen.items()
                  if k in config.model_fields_set and json.dumps(here[k]) != json.dumps(v)}
    valid = CurateConfig.model_validate({**here, **frozen})  # the frozen values, checked as settings
    then, now = manifest.get("versions", {}), versions(valid.lexicon, valid.grader)
    differ = {k: [then.get(k), now.get(k)] for k in DECISION_VERSIONS if then.get(k) != now.get(k)}
    return (config.model_copy(update={k: getattr(valid, k) for k in FROZEN_FIELDS}),
            Earlier(uri, manifest, overridden, differ))


def reference_steps(earlier: Earlier, policy: Policy, output: str, storage: io.Storage) -> Policy:
    """A step-ratio policy's reference steps per problem, copied from the earlier run's output into this one's."""
    if not policy.reference_steps_file or policy.reference_steps:
        return policy
    source = io.join(folder_of(earlier.uri), policy.reference_steps_file)
    table = io.read_parquet_dir(source, storage)
    if table is None:
        raise FileNotFoundError(f"--policy-from {earlier.uri}: its reference steps are not under {source}")
    io.remove_tree(io.join(output, REFERENCE_DIR), storage)
    io.write_parquet(table, io.join(output, REFERENCE_DIR, "part-00000.parquet"), storage)
    return policy.model_copy(update={"reference_steps_file": REFERENCE_DIR})
