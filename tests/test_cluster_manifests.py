"""Every cluster definition in cluster/ parses, carries the fields its controller requires, and agrees with the rest:
one Ray version, one image family per device, entrypoints that raypipe's own parsers accept."""
from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path

import pytest
import yaml

import raypipe

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
RAY_VERSION = "2.60.0"
IMAGE = re.compile(rf"^ghcr\.io/raypipe/raypipe:{re.escape(raypipe.__version__)}-ray{re.escape(RAY_VERSION)}"
                   r"-py311-(?P<variant>cpu|gpu)$")
KUBERAY_KINDS = {"RayCluster", "RayJob", "RayService"}


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _kuberay() -> list[tuple[str, dict]]:
    out = []
    for p in sorted((CLUSTER / "kuberay").glob("*.yaml")):
        for d in _docs(p):
            if d.get("kind") in KUBERAY_KINDS:
                out.append((p.name, d))
    return out


def _cluster_specs(doc: dict) -> dict:
    spec = doc["spec"]
    return {"RayCluster": spec, "RayJob": spec.get("rayClusterSpec"), "RayService": spec.get("rayClusterConfig")}[doc["kind"]]


def test_every_definition_parses_and_all_kinds_exist():
    files = [p for p in CLUSTER.rglob("*") if p.suffix in (".yaml", ".yml")]
    assert len(files) >= 6
    for p in files:
        assert _docs(p), f"{p} is empty"
    kinds = sorted(d["kind"] for _, d in _kuberay())
    assert kinds.count("RayCluster") == 1 and kinds.count("RayService") == 1 and kinds.count("RayJob") == 2
    for sub in (CLUSTER, CLUSTER / "kuberay", CLUSTER / "aws"):
        assert (sub / "README.md").is_file(), f"{sub} has no README"


def test_installed_ray_is_the_version_the_manifests_name():
    import ray

    assert ray.__version__ == RAY_VERSION


@pytest.mark.parametrize("name,doc", _kuberay(), ids=lambda x: x if isinstance(x, str) else x["metadata"]["name"])
def test_kuberay_required_fields_and_consistency(name, doc):
    assert doc["apiVersion"] == "ray.io/v1"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
    spec = _cluster_specs(doc)
    assert spec, f"{name}: no cluster spec"
    assert spec["rayVersion"] == RAY_VERSION
    accounts = {d["metadata"]["name"] for d in _docs(CLUSTER / "kuberay" / "serviceaccount.yaml")}

    def check_group(group: dict, head: bool) -> str:
        assert isinstance(group["rayStartParams"], dict)
        assert all(isinstance(v, str) for v in group["rayStartParams"].values()), "rayStartParams values are strings"
        pod = group["template"]["spec"]
        assert pod.get("serviceAccountName") in accounts, "pods use the S3-enabled service account"
        ray_container = pod["containers"][0]
        m = IMAGE.match(ray_container["image"])
        assert m, f"{name}: unexpected image {ray_container['image']}"
        res = ray_container["resources"]
        assert res["requests"] == res["limits"], "Ray sizes itself from limits: requests must equal limits"
        gpus = int(res["limits"].get("nvidia.com/gpu", 0))
        assert (m["variant"] == "gpu") == (gpus > 0), f"{name}: GPU pods use the -gpu image, CPU pods the -cpu one"
        mounts = {v["name"] for v in ray_container.get("volumeMounts", [])}
        assert mounts <= {v["name"] for v in pod.get("volumes", [])}
        if head:
            ports = {p["containerPort"] for p in ray_container["ports"]}
            assert {6379, 8265, 10001} <= ports
        else:
            assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
            assert "dshm" in mounts, "workers need a memory-backed /dev/shm"
            if gpus:
                assert any(t["key"] == "nvidia.com/gpu" for t in pod.get("tolerations", []))
        return m["variant"]

    check_group(spec["headGroupSpec"], head=True)
    groups = spec["workerGroupSpecs"]
    names = [g["groupName"] for g in groups]
    assert len(names) == len(set(names))
    variants = [check_group(g, head=False) for g in groups]
    if doc["kind"] == "RayCluster" or doc["kind"] == "RayService":
        assert sorted(variants) == ["cpu", "gpu"], "a CPU and a GPU worker group"
    base = yaml.safe_load((CLUSTER / "kuberay" / "raycluster.yaml").read_text())["spec"]
    assert spec["headGroupSpec"] == base["headGroupSpec"], f"{name}: head differs from raycluster.yaml"
    by_name = {g["groupName"]: g for g in base["workerGroupSpecs"]}
    for g in groups:
        assert g["groupName"] in by_name
        assert g["template"] == by_name[g["groupName"]]["template"], f"{name}: {g['groupName']} pod differs"


def _entry(doc: dict) -> tuple[Path, list[str]]:
    argv = shlex.split(doc["spec"]["entrypoint"])
    assert argv[0] == "python"
    script = argv[1]
    assert script.startswith("/home/ray/raypipe/"), "the image holds the checkout at /home/ray/raypipe"
    return ROOT / script[len("/home/ray/raypipe/"):], argv[2:]


def _job(kind: str) -> dict:
    return next(d for _, d in _kuberay() if d["kind"] == "RayJob" and d["metadata"]["labels"]["raypipe/job"] == kind)


def _check_job_lifecycle(doc: dict) -> None:
    from ray.runtime_env import RuntimeEnv

    spec = doc["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    assert spec["backoffLimit"] >= 1 and spec["activeDeadlineSeconds"] > 0
    assert spec["submissionMode"] in ("K8sJobMode", "HTTPMode", "InteractiveMode")
    RuntimeEnv(**yaml.safe_load(spec["runtimeEnvYAML"]))


def test_rayjob_curate_entrypoint_is_accepted_by_the_curate_job():
    from raypipe.cli import build_parser
    from raypipe.core import settings

    doc = _job("curate")
    _check_job_lifecycle(doc)
    script, args = _entry(doc)
    assert script == ROOT / "jobs" / "curate.py" and script.is_file()
    config = settings.from_args(build_parser().parse_args(["curate", *args]))
    assert config.input.startswith("s3://") and config.output.startswith("s3://")
    workers = doc["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert [g["groupName"] for g in workers] == ["cpu-workers"], "curation needs no GPU"


def test_rayjob_sft_entrypoint_is_accepted_by_raypipe_train():
    from raypipe.cli import build_parser
    from raypipe.core import settings

    doc = _job("sft")
    _check_job_lifecycle(doc)
    script, args = _entry(doc)
    assert script.name == "train_sft.py" and script.is_file()
    ns = settings.from_args(build_parser().parse_args(["train", *args]))
    workers = doc["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    gpus = sum(g["replicas"] * int(g["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"])
               for g in workers)
    assert ns.num_workers * ns.gpus_per_worker == gpus, "one Ray Train worker per GPU of the cluster"


def test_rayservice_serve_config_is_valid_for_ray_serve():
    from ray.serve.schema import ServeDeploySchema

    doc = next(d for _, d in _kuberay() if d["kind"] == "RayService")
    config = ServeDeploySchema(**yaml.safe_load(doc["spec"]["serveConfigV2"]))
    apps = {a.name: a for a in config.applications}
    assert set(apps) == {"scorer", "llm"}
    assert len({a.route_prefix for a in config.applications}) == 2
    llm = apps["llm"]
    assert llm.import_path == "ray.serve.llm:build_openai_app"
    (model,) = llm.args["llm_configs"]
    assert model["model_loading_config"]["model_source"].endswith("/model"), "the SFT job's exported model"
    module, builder = apps["scorer"].import_path.split(":")
    path = ROOT / (module.replace(".", "/") + ".py")
    if not path.exists():
        pytest.skip(f"{path.relative_to(ROOT)} (issue 3) is not on main yet")
    assert re.search(rf"^def {builder}\(", path.read_text(), re.M), f"{path} defines no {builder}()"
    from raypipe.online.app import DEPLOYMENT_NAME, ServeSettings

    ServeSettings(**apps["scorer"].args)  # the app's own settings model: unknown keys are errors
    assert [d.name for d in apps["scorer"].deployments] == [DEPLOYMENT_NAME]


def _aws() -> dict:
    return yaml.safe_load((CLUSTER / "aws" / "cluster.yaml").read_text())


def test_ray_up_file_passes_rays_own_schema():
    from ray.autoscaler._private.util import validate_config

    config = _aws()
    validate_config(config)
    broken = copy.deepcopy(config)
    broken["available_node_types"]["gpu_worker"]["min_workers"] = "zero"
    with pytest.raises(Exception):
        validate_config(broken)


def test_ray_up_file_nodes_images_and_s3_access():
    config = _aws()
    types = config["available_node_types"]
    assert config["head_node_type"] in types and {"cpu_worker", "gpu_worker"} <= set(types)
    assert types["head"]["resources"] == {"CPU": 0}
    for name, t in types.items():
        assert t["node_config"]["IamInstanceProfile"]["Arn"].startswith("arn:aws:iam::"), f"{name}: S3 via profile"
    assert IMAGE.match(config["docker"]["image"])["variant"] == "cpu"
    gpu = types["gpu_worker"]
    assert IMAGE.match(gpu["docker"]["worker_image"])["variant"] == "gpu"
    assert re.match(r"^(p\d|g\d)", gpu["node_config"]["InstanceType"]), "a GPU instance family"
    assert any("--gpus" in o for o in gpu["docker"]["worker_run_options"])
    assert sum(t.get("max_workers", 0) for n, t in types.items() if n != "head") <= config["max_workers"]


def test_runtime_env_is_valid_and_leaves_heavy_paths_behind():
    from ray.runtime_env import RuntimeEnv

    env = yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())
    RuntimeEnv(**env)
    assert env["working_dir"] == "."
    assert {".venv/", ".git/", ".cache/"} <= set(env["excludes"])
    assert all(isinstance(v, str) for v in env["env_vars"].values())


def test_dockerfile_builds_from_the_same_ray_and_copies_what_exists():
    text = (CLUSTER / "image" / "Dockerfile").read_text()
    assert f"ARG RAY_VERSION={RAY_VERSION}" in text
    assert re.search(r"^FROM rayproject/ray:\$\{RAY_VERSION\}-py311-\$\{VARIANT\}$", text, re.M)
    for src in re.findall(r"^COPY --chown=\S+ (.+) \S+$", text, re.M):
        for part in src.split():
            assert (ROOT / part).exists(), f"Dockerfile copies {part}, which is not in the repository"
    pins = re.search(r'"torch==([\d.]+)"', (ROOT / "pyproject.toml").read_text())[1]
    assert f'"torch=={pins}"' in text, "the image pins the torch the project tests with"
