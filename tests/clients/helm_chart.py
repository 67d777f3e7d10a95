#!/usr/bin/env python3
"""Helm (PyPI `helm-sdkpy`, Helm 4's own Go library) packaging a chart and pushing it to
a registry over HTTPS; the chart pulled back with the Python ORAS client (PyPI `oras`),
since helm-sdkpy's own Pull crashes inside the library.

    helm_chart.py push HOST:PORT CHART_DIR OUT_DIR REMOTE_PATH [USER PASSWORD]
        packages CHART_DIR into OUT_DIR, logs in as USER (when given) and pushes the
        package to oci://HOST:PORT/REMOTE_PATH; the last line printed is
        {"package": PATH} (also when the push failed, with "error": TEXT).
    helm_chart.py pull HOST:PORT REPOSITORY:TAG OUT_DIR USER PASSWORD
        pulls the chart layer with oras into OUT_DIR; last line {"files": [PATH, ...]}.

Both trust the CA named by SSL_CERT_FILE: Helm reads it itself (its CA-file and
plain-HTTP options are ignored by push), oras gets it as tls_verify. The caller gives HOME and HELM_* directories of its own, so nothing is written
outside them.
"""

import asyncio
import json
import os
import sys

CHART_CONFIG = "application/vnd.cncf.helm.config.v1+json"
CHART_LAYER = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"


def push(host, chart_dir, out_dir, remote_path, creds):
    import helm_sdkpy

    config = helm_sdkpy.Configuration()
    package = asyncio.run(helm_sdkpy.Package(config).run(chart_dir, dest_dir=out_dir))
    print(f"packaged {package}", flush=True)
    result = {"package": package}
    try:
        if creds:
            user, password = creds
            asyncio.run(
                helm_sdkpy.RegistryLogin(config).run(
                    hostname=host, username=user, password=password
                )
            )
            print(f"logged in to {host} as {user}", flush=True)
        asyncio.run(helm_sdkpy.Push(config).run(package, f"oci://{host}/{remote_path}"))
        print(f"pushed to oci://{host}/{remote_path}", flush=True)
    except helm_sdkpy.HelmError as e:
        result["error"] = str(e)
    print(json.dumps(result), flush=True)


def pull(host, reference, out_dir, user, password):
    import oras.client

    client = oras.client.OrasClient(
        hostname=host,
        tls_verify=os.environ.get("SSL_CERT_FILE", True),
        auth_backend="token",
    )
    # Not client.login(): that also writes ~/.docker/config.json.
    client.auth.set_basic_auth(user, password)
    files = client.pull(
        target=f"{host}/{reference}",
        outdir=out_dir,
        allowed_media_type=["application/vnd.oci.image.manifest.v1+json"],
    )
    print(json.dumps({"files": files}), flush=True)


def main(argv):
    if len(argv) >= 5 and argv[0] == "push" and len(argv) in (5, 7):
        creds = (argv[5], argv[6]) if len(argv) == 7 else None
        push(argv[1], argv[2], argv[3], argv[4], creds)
    elif len(argv) == 6 and argv[0] == "pull":
        pull(*argv[1:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
