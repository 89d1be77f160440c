"""One local Ray instance (2 CPUs) and one S3-compatible server (moto, 127.0.0.1, a free port)
per test module: starting Ray costs seconds. The S3 settings go into the environment before Ray
starts, so its worker processes inherit them."""
from __future__ import annotations

import os

import pytest

ray = pytest.importorskip("ray")
moto_server = pytest.importorskip("moto.server")
pytest.importorskip("s3fs")

BUCKET = "batches"


@pytest.fixture(scope="module")
def s3():
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    endpoint = "http://%s:%d" % server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "FSSPEC_S3_ENDPOINT_URL": endpoint}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import fsspec
    import fsspec.config

    fsspec.config.conf.setdefault("s3", {})["endpoint_url"] = endpoint  # fsspec read the env on import
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.makedirs(BUCKET, exist_ok=True)  # moto keeps its buckets per process, across modules
    yield fs
    fsspec.config.conf["s3"].pop("endpoint_url", None)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


@pytest.fixture(scope="module")
def ray_address(s3):
    """A local Ray instance started by the test; yields its address (for `--cluster ray:ADDRESS`)."""
    from shared.raypool import connect

    connect(None, num_cpus=2)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
