"""The output folder's README.md: a Hugging Face dataset card, so that `datasets.load_dataset(OUTPUT)` reads the
curated and dropped splits and the Hub shows what the data is.

The YAML front matter has a `configs` entry whose `data_files` name each non-empty split's Parquet files (an empty
split is left out: `datasets` cannot load one), `dataset_info.features` from the splits' Arrow schema, and
`license: other` for the owner to set. The body: counts, the policy, the config hash and versions, how to load it.
Pure: text from the manifest and a schema.
"""
from __future__ import annotations

import json

import pyarrow as pa
import yaml

from raypipe.core.rules import RULES

SPLITS = {"curated": "kept", "dropped": "dropped"}  # split -> its count in manifest["counts"]
_NAMES = {"double": "float64", "float": "float32", "halffloat": "float16"}


def feature(t: pa.DataType) -> dict:
    """A `datasets` feature's YAML fields for an Arrow type (as datasets.Features._to_yaml_list writes them)."""
    if pa.types.is_struct(t):
        return {"struct": [{"name": t.field(i).name, **feature(t.field(i).type)} for i in range(t.num_fields)]}
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        inner = feature(t.value_type)  # a value is written as its dtype, a struct as its fields
        inner = inner["dtype"] if set(inner) == {"dtype"} else inner.get("struct", inner)
        out = {"large_list" if pa.types.is_large_list(t) else "list": inner}
        return {**out, "length": t.list_size} if pa.types.is_fixed_size_list(t) else out
    if pa.types.is_map(t) or pa.types.is_dictionary(t) or pa.types.is_union(t):
        raise TypeError(f"no datasets feature for {t}")
    return {"dtype": _NAMES.get(str(t), str(t))}


def features(schema: pa.Schema) -> list[dict] | None:
    """The schema as dataset_info.features, or None where a column has no feature (datasets then infers them)."""
    try:
        return [{"name": f.name, **feature(f.type)} for f in schema]
    except TypeError:
        return None


def front_matter(manifest: dict, schema: pa.Schema | None) -> str:
    counts = manifest["counts"]
    splits = [s for s, n in SPLITS.items() if counts.get(n, 0)]
    meta: dict = {"pretty_name": "raypipe curated chain-of-thought trajectories",
                  "tags": ["raypipe", "chain-of-thought", "reasoning", "curation"]}
    if splits:
        meta["configs"] = [{"config_name": "default",
                            "data_files": [{"split": s, "path": f"{s}/*.parquet"} for s in splits]}]
        feats = features(schema) if schema is not None else None
        if feats:
            meta["dataset_info"] = {"config_name": "default", "features": feats}
    license = ("license: other  # set this: the license of the trajectories (and of the models that wrote them)\n"
               "# license_name: \n# license_link: \n")
    return "---\n" + license + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"


def _table(header: list[str], rows: list[list]) -> str:
    cells = [header, ["---"] * len(header), *[[str(c).replace("|", "\\|") for c in r] for r in rows]]
    return "\n".join("| " + " | ".join(r) + " |" for r in cells)


def body(manifest: dict, output: str) -> str:
    c, p, cfg, v = manifest["counts"], manifest["policy"], manifest["config"], manifest["versions"]
    splits = [s for s, n in SPLITS.items() if c.get(n, 0)]
    empty = [s for s in SPLITS if s not in splits]
    out = ["# raypipe curated chain-of-thought trajectories", ""]
    if manifest.get("synthetic_input"):
        out += ["**Synthetic input:** this run used a generated sample, not real trajectories.", ""]
    out += ["## Counts", "",
            _table(["split", "rows", "what"], [["curated", c["kept"], "kept: the training data"],
                                               ["dropped", c["dropped"], "dropped, each with its reason"]]), "",
            f"{c['input_rows']} input rows gave {c['records']} records = {c['kept']} kept + {c['dropped']} dropped + "
            f"{c['rejected']} rejected (rows that could not be read; in `rejects/`, not a split)."
            + (" Counts balance." if manifest.get("balanced") else " **Counts do not balance.**")]
    if empty:
        out += ["", "Empty split(s) left out of the configs (`datasets` cannot load an empty split): "
                f"{', '.join(empty)}."]
    rule = RULES.get(p["rule"])
    out += ["", "## Policy", "",
            f"Rule **{p['rule']}**: " + ("no verified-correct row is dropped" if not rule.drops else
                                         f"drop {p['drop_top']:.0%} of each source's verified-correct rows "
                                         f"({rule.describes})")
            + f"; branch score from proxy **{p['proxy']}**; rows whose verdict is not `correct` are "
            f"{'kept' if p.get('keep_incorrect') else 'dropped'}. Lexicon **{v.get('lexicon')}** "
            f"({', '.join(v.get('lexicon_markers', []))}), segmenter `{cfg.get('segmenter')}`, grader "
            f"{cfg.get('grader')} ({v.get('verifier')}), answers from `{cfg.get('answer_from')}`.", ""]
    thresholds = [[s, t["n_correct"], t["n_drop"], f"{t['score']:.6g}"]
                  for s, t in sorted(p["thresholds"].items()) if t]
    if thresholds:
        out += ["Thresholds per source (a row is dropped at or over its source's):", "",
                _table(["source", "verified correct", "dropped by the rule", "threshold"], thresholds), ""]
    audit = manifest.get("suspect_reference")
    if audit:
        out += ["Suspect references (agreeing answers contradict the reference): the audit found "
                f"{len(audit['problems'])} problem(s); the policy keeps out {len(audit.get('kept_out', []))} "
                "reference(s) (their rows dropped, reason `suspect_reference`). See `suspect_reference` in "
                "manifest.json.", ""]
    if manifest.get("policy_from"):
        pf = manifest["policy_from"]
        match = {True: "the same input", False: "a different input", None: "an input of unknown fingerprint"}
        out += [f"The policy was applied from `{pf['manifest']}`, measured on {match[pf['fingerprint_matches']]}.",
                ""]
    out += ["## Provenance", "",
            f"Config hash `{manifest['config_hash']}`"
            + (f", input fingerprint `{manifest['input_fingerprint']}`" if manifest.get("input_fingerprint") else "")
            + ". The whole record is `manifest.json` and `report.html` beside this card.", "",
            _table(["component", "version"], [[k, json.dumps(x) if isinstance(x, list) else x] for k, x in v.items()]),
            "", "## Loading", ""]
    if splits:
        files = ", ".join(f'"{s}": "{output}/{s}/*.parquet"' for s in splits)
        out += ["```python", "from datasets import load_dataset", "",
                f'ds = load_dataset("parquet", data_files={{{files}}})',
                f'ds = load_dataset("{output}")  # the same, through this card\'s configs', "```"]
    else:
        out += ["No split has rows: there is nothing to load."]
    out += ["", "## License", "",
            "Not set by raypipe: the trajectories keep the license of their source data and of the models that "
            "wrote them. Set `license` in the front matter before sharing.", ""]
    return "\n".join(out)


def dataset_card(manifest: dict, schema: pa.Schema | None, output: str) -> str:
    """README.md for a curation output folder: `schema` is the splits' Arrow schema (None if no split has rows)."""
    return front_matter(manifest, schema) + "\n" + body(manifest, output.rstrip("/"))
