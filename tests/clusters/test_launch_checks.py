"""The cluster checks that need no cluster: address, storage and tracking URI, before anything runs."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from clsweep.spec.errors import SpecError
from clsweep.sweep.cluster import check_launch, effective_address, filesystem_type

LOCAL_DISK = "/dev/sda1 / ext4 rw 0 0\n"
NFS_SHARED = LOCAL_DISK + "fileserver:/export/shared /shared nfs4 rw,relatime 0 0\n"


def problems(excinfo: pytest.ExceptionInfo[SpecError]) -> dict[str, str]:
    return {".".join(map(str, p.path)): p.message for p in excinfo.value.problems}


def test_local_sqlite_with_a_ray_client_address_is_refused() -> None:
    with pytest.raises(SpecError) as err:
        check_launch(
            "ray://head:10001",
            tracking_uri="sqlite:////home/me/runs/mlflow.db",
            storage="/shared/runs",
            mounts=NFS_SHARED,
            environ={},
        )
    found = problems(err)
    assert list(found) == ["--tracking-uri"]
    assert "head node" in found["--tracking-uri"]
    assert "--tracking-uri http://" in found["--tracking-uri"] and "ray job submit" in found["--tracking-uri"]


def test_tracking_server_with_a_ray_client_address_is_accepted() -> None:
    check_launch(
        "ray://head:10001",
        tracking_uri="http://mlflow.internal:5000",
        storage="/shared/runs",
        mounts=NFS_SHARED,
        environ={},
    )


def test_sqlite_on_the_driver_nodes_local_disk_is_accepted_when_joining_a_cluster() -> None:
    # the driver is the only MLflow writer, and with auto / HOST:PORT it runs on a cluster node
    check_launch(
        "auto",
        tracking_uri="sqlite:////var/tmp/clsweep/mlflow.db",
        storage="/shared/runs",
        mounts=NFS_SHARED,
        environ={},
    )
    check_launch(
        "10.0.0.5:6379",
        tracking_uri="sqlite:////var/tmp/mlflow.db",
        storage="/shared/runs",
        mounts=NFS_SHARED,
        environ={},
    )


def test_sqlite_on_a_network_filesystem_is_refused_on_a_cluster_only() -> None:
    uri = "sqlite:////shared/runs/mlflow.db"  # the default store when --storage is on NFS
    with pytest.raises(SpecError) as err:
        check_launch("auto", tracking_uri=uri, storage="/shared/runs", mounts=NFS_SHARED, environ={})
    assert "nfs4" in problems(err)["--tracking-uri"]
    check_launch(
        None, tracking_uri=uri, storage="/shared/runs", mounts=NFS_SHARED, environ={}
    )  # embedded Ray


def test_ray_address_from_the_environment_counts_as_joining_a_cluster() -> None:
    # `ray job submit` sets RAY_ADDRESS for its entrypoint
    with pytest.raises(SpecError) as err:
        check_launch(
            None,
            tracking_uri="sqlite:////shared/mlflow.db",
            storage="/shared/runs",
            mounts=NFS_SHARED,
            environ={"RAY_ADDRESS": "10.0.0.5:6379"},
        )
    assert "--tracking-uri" in problems(err)


@pytest.mark.parametrize(
    ("address", "environ", "field"),
    [
        ("http://head:8265", {}, "--address"),
        (None, {"RAY_ADDRESS": "http://127.0.0.1:8265"}, "RAY_ADDRESS"),
    ],
)
def test_a_dashboard_url_is_not_a_cluster_address(
    address: str | None, environ: dict[str, str], field: str
) -> None:
    with pytest.raises(SpecError) as err:
        check_launch(
            address,
            tracking_uri="http://mlflow:5000",
            storage="/shared/runs",
            mounts=LOCAL_DISK,
            environ=environ,
        )
    message = problems(err)[field]
    assert "ray job submit --address http://HEAD:8265 -- clsweep run" in message
    assert ("unset RAY_ADDRESS" in message) == (field == "RAY_ADDRESS")


def test_object_store_storage_is_refused_with_the_reason() -> None:
    with pytest.raises(SpecError) as err:
        check_launch(
            "auto",
            tracking_uri="http://mlflow:5000",
            storage="s3://bucket/clsweep",
            mounts=LOCAL_DISK,
            environ={},
        )
    assert "Object-store URIs are not supported" in problems(err)["--storage"]


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SpecError) as err:
        check_launch(
            "ray://head:10001",
            tracking_uri="sqlite:////tmp/mlflow.db",
            storage="gs://bucket/x",
            mounts=LOCAL_DISK,
            environ={},
        )
    assert set(problems(err)) == {"--storage", "--tracking-uri"}


def test_effective_address() -> None:
    assert effective_address(" ray://h:10001 ", {"RAY_ADDRESS": "x:1"}) == "ray://h:10001"
    assert effective_address(None, {"RAY_ADDRESS": "10.0.0.5:6379"}) == "10.0.0.5:6379"
    assert effective_address(None, {"RAY_ADDRESS": "  "}) is None
    assert effective_address(None, {}) is None


def test_filesystem_type_takes_the_deepest_mount_and_the_last_one_mounted_over_it() -> None:
    mounts = textwrap.dedent("""\
        /dev/sda1 / ext4 rw 0 0
        fileserver:/export /shared nfs4 rw 0 0
        tmpfs /shared/scratch tmpfs rw 0 0
        /dev/sdb1 /shared/scratch xfs rw 0 0
        fileserver:/with\\040space /mnt/with\\040space nfs rw 0 0
    """)
    assert filesystem_type("/shared/runs/mlflow.db", mounts) == "nfs4"
    assert filesystem_type("/shared/scratch/a/b", mounts) == "xfs"
    assert filesystem_type("/sharedx/a", mounts) == "ext4"  # not under /shared
    assert filesystem_type("/mnt/with space/m.db", mounts) == "nfs"


@pytest.mark.skipif(not Path("/proc/mounts").exists(), reason="reads the Linux mount table")
def test_filesystem_type_reads_this_machines_mount_table() -> None:
    assert filesystem_type("/proc/self") == "proc"
    assert filesystem_type("/proc/no/such/path") == "proc"  # nearest existing ancestor decides


def test_clsweep_run_refuses_local_sqlite_with_a_ray_client_address(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from clsweep.cli import main

    space = tmp_path / "space.yaml"
    space.write_text(
        textwrap.dedent("""\
        name: remote
        experiment:
          benchmark: {name: permuted, source: digits, num_tasks: 2, seed: 0}
          backbone: {name: mlp, hidden_dims: [32]}
          algorithm: {name: finetuning}
    """)
    )
    storage = tmp_path / "runs"
    code = main(
        [
            "run",
            str(space),
            "--address",
            "ray://127.0.0.1:1",
            "--storage",
            str(storage),
            "--tracking-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "--tracking-uri" in err and "tracking server" in err
    assert not storage.exists() and not (tmp_path / "mlflow.db").exists()  # nothing started, nothing written
