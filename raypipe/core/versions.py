"""The versions a result depends on, recorded in manifests and stamps."""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from raypipe import __version__
from raypipe.core.graders import GRADERS
from raypipe.core.lexicon import get_lexicon
from raypipe.core.schema import SCHEMA_VERSION

# The versions a keep/drop decision depends on: a policy recorded under others may decide differently here.
DECISION_VERSIONS = ("lexicon", "lexicon_markers", "verifier", "schema")


def package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def versions(lexicon: str, grader: str = "math-verify") -> dict:
    lx = get_lexicon(lexicon)
    return {"raypipe": __version__, "ray": package_version("ray"), "math-verify": package_version("math-verify"),
            "pyarrow": package_version("pyarrow"), "lexicon": lx.tag, "lexicon_markers": list(lx.markers),
            "verifier": GRADERS.get(grader).version, "schema": SCHEMA_VERSION}
