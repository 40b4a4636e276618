"""Every file in clusters/ is parsed and checked: the `ray up` file against the schema Ray ships,
the KubeRay manifests for consistency (names, ports, volumes, versions), the SLURM script by
bash -n and shellcheck, sweep files by `clsweep validate`, the README for completeness."""

from __future__ import annotations

import copy
import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTERS = REPO / "clusters"
IMAGE_DIR = "/home/ray/clsweep"  # WORKDIR of clusters/docker/Dockerfile
RAY_IMAGE = f"rayproject/ray:{ray.__version__}-py311-gpu"


def files(pattern: str) -> list[Path]:
    found = sorted(CLUSTERS.rglob(pattern))
    assert found, f"no {pattern} under clusters/"
    return found


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def test_every_file_in_clusters_is_of_a_checked_kind() -> None:
    kinds = {".yaml": "YAML", ".sbatch": "shell", ".md": "README", "Dockerfile": "Dockerfile"}
    for path in CLUSTERS.rglob("*"):
        if path.is_file():
            assert path.suffix in kinds or path.name in kinds, f"{path} is checked by no test"
    for path in files("*.yaml"):
        assert docs(path), f"{path} is empty"


# ---- ray up ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", files("ray-up/*.yaml"), ids=lambda p: p.name)
def test_ray_up_file_matches_rays_schema_and_prepares(path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="Ray's own config validation needs jsonschema")
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = docs(path)[0]
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    prepared = prepare_config(copy.deepcopy(config))  # what `ray up` does before touching the cloud
    validate_config(prepared)

    assert config["docker"]["image"] == RAY_IMAGE  # same Ray as the clients
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("CPU") == 0  # trials never take the driver's cores
    gpu = [
        t
        for name, t in types.items()
        if name != config["head_node_type"]
        and t["node_config"]["InstanceType"].split(".")[0][0] in "gp"
        and t.get("max_workers", 0) > 0
    ]
    assert gpu, "no GPU worker type (g*/p* instances) that can scale up"
    setup = " ".join(config["setup_commands"])
    assert "pip install" in setup and "~/clsweep" in setup and config["file_mounts"]["~/clsweep"] == "."
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = " ".join(config[key])
        assert "RAY_AUTH_MODE=token" in start and "MLFLOW_TRACKING_URI=http://" in start, key
    assert "~/.ray/auth_token" in config["file_mounts"]  # the token reaches every node
    assert "ulimit -n 65536" in " ".join(config["head_start_ray_commands"])


# ---- KubeRay -----------------------------------------------------------------------------------


def kube_objects() -> dict[tuple[str, str], dict[str, Any]]:
    objects = {}
    for path in files("kuberay/*.yaml"):
        for doc in docs(path):
            assert {"apiVersion", "kind", "metadata"} <= set(doc), path
            objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


def pod_specs(objects: dict[tuple[str, str], dict[str, Any]]) -> list[dict[str, Any]]:
    specs = [o["spec"]["template"]["spec"] for (kind, _), o in objects.items() if kind == "Deployment"]
    for (kind, _), o in objects.items():
        if kind == "RayJob":
            cluster = o["spec"]["rayClusterSpec"]
            specs.append(cluster["headGroupSpec"]["template"]["spec"])
            specs += [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]
    return specs


def test_kuberay_objects_reference_each_other_consistently() -> None:
    objects = kube_objects()
    namespaces = {o["metadata"]["name"] for (k, _), o in objects.items() if k == "Namespace"}
    assert namespaces == {"clsweep"}
    for (kind, name), o in objects.items():
        if kind != "Namespace":
            assert o["metadata"].get("namespace") == "clsweep", (kind, name)
    claims = {name for kind, name in objects if kind == "PersistentVolumeClaim"}
    for spec in pod_specs(objects):
        for volume in spec.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
        declared = {v["name"] for v in spec.get("volumes", [])}
        for container in spec["containers"]:
            assert {m["name"] for m in container.get("volumeMounts", [])} <= declared
    assert objects[("PersistentVolumeClaim", "clsweep-shared")]["spec"]["accessModes"] == ["ReadWriteMany"]

    deployment, service = objects[("Deployment", "mlflow")], objects[("Service", "mlflow")]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    (svc_port,) = service["spec"]["ports"]
    assert port_names[svc_port["targetPort"]] == 5000
    args = dict(a.removeprefix("--").split("=", 1) for a in container["args"])
    assert args["port"] == "5000" and args["backend-store-uri"].startswith("sqlite:////")
    db_mounts = [m["mountPath"] for m in container["volumeMounts"] if m["name"] == "db"]
    assert (
        args["backend-store-uri"].removeprefix("sqlite:///").startswith(db_mounts[0])
    )  # sqlite on its own RWO volume
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    assert f"mlflow.clsweep.svc:{svc_port['port']}" in args["allowed-hosts"].split(",")


def test_rayjob_runs_a_shipped_sweep_against_the_mlflow_service() -> None:
    objects = kube_objects()
    (job,) = [o for (kind, _), o in objects.items() if kind == "RayJob"]
    assert job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]
    known = {
        "entrypoint",
        "runtimeEnvYAML",
        "shutdownAfterJobFinishes",
        "ttlSecondsAfterFinished",
        "activeDeadlineSeconds",
        "submissionMode",
        "rayClusterSpec",
        "clusterSelector",
        "suspend",
        "backoffLimit",
        "submitterPodTemplate",
        "submitterConfig",
        "entrypointNumCpus",
        "entrypointNumGpus",
        "entrypointResources",
        "jobId",
        "metadata",
        "deletionStrategy",
        "managedBy",
    }  # KubeRay v1.6 RayJobSpec
    assert set(spec) <= known
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__
    assert cluster["authOptions"] == {"mode": "token"}
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    gpu_groups = [
        g
        for g in cluster["workerGroupSpecs"]
        if g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu")
    ]
    assert gpu_groups and all(g["maxReplicas"] >= g["minReplicas"] >= 0 for g in gpu_groups)

    argv = shlex.split(spec["entrypoint"])
    assert argv[:2] == ["clsweep", "run"]
    space = Path(argv[2])
    assert space.is_relative_to(IMAGE_DIR) and (REPO / space.relative_to(IMAGE_DIR)).is_file()
    options = dict(zip(argv[3::2], argv[4::2], strict=True))
    service = objects[("Service", "mlflow")]
    expected_uri = f"http://{service['metadata']['name']}.{service['metadata']['namespace']}.svc:{service['spec']['ports'][0]['port']}"
    assert options["--tracking-uri"] == expected_uri
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {"name": "MLFLOW_TRACKING_URI", "value": expected_uri} in head["env"]
    mounts = [m["mountPath"] for m in head["volumeMounts"]]
    assert any(Path(options["--storage"]).is_relative_to(m) for m in mounts)  # storage on the shared volume
    for pod in pod_specs(objects):
        for container in pod["containers"]:
            assert container["image"] == "REGISTRY/clsweep:0.1.0"


def test_dockerfile_builds_on_the_same_ray_and_copies_existing_paths() -> None:
    (path,) = files("Dockerfile")
    lines = [
        line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == f"FROM {RAY_IMAGE}"
    workdir = [line.split()[1] for line in lines if line.startswith("WORKDIR")]
    assert workdir == [IMAGE_DIR]
    for line in lines:
        if line.startswith("COPY"):
            sources = [w for w in line.split()[1:-1] if not w.startswith("--")]
            assert all((REPO / s).exists() for s in sources), line


# ---- SLURM -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", files("*.sbatch"), ids=lambda p: p.name)
def test_slurm_script_is_valid_bash(path: Path) -> None:
    done = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    directives = [line for line in path.read_text().splitlines() if line.startswith("#SBATCH")]
    assert any("--nodes=" in d for d in directives) and any("--signal=B:TERM@" in d for d in directives)


@pytest.mark.skipif(
    shutil.which("shellcheck") is None, reason="shellcheck is not installed (apt-get install shellcheck)"
)
@pytest.mark.parametrize("path", files("*.sbatch"), ids=lambda p: p.name)
def test_slurm_script_passes_shellcheck(path: Path) -> None:
    done = subprocess.run(["shellcheck", "--shell=bash", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


# ---- sweep files, README -----------------------------------------------------------------------


@pytest.mark.parametrize("path", files("sweeps/*.yaml"), ids=lambda p: p.name)
def test_cluster_sweep_files_pass_clsweep_validate(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from clsweep.cli import main
    from clsweep.spec.sweep import load_sweep

    assert main(["validate", str(path)]) == 0, capsys.readouterr().err
    spec = load_sweep(path)
    assert 0 < spec.resources.gpus <= 1  # a GPU fraction per trial, from the sweep file
    root = spec.experiment["benchmark"].get("root")
    assert root is None or os.path.isabs(root)  # trials run in other working directories


def test_readme_covers_every_file_and_the_server_setup() -> None:
    text = (CLUSTERS / "README.md").read_text()
    for path in CLUSTERS.rglob("*"):
        if path.is_file() and path.name != "README.md":
            assert str(path.relative_to(CLUSTERS)) in text, (
                f"README does not mention {path.relative_to(CLUSTERS)}"
            )
    for needle in (
        "--backend-store-uri postgresql",
        "--artifacts-destination",
        "ray job submit",
        "ray[default]",
        "shared",
        "RAY_AUTH_MODE",
        "clsweep.node",
        "SLURM_",
    ):
        assert needle in text, needle
