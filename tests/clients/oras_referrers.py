#!/usr/bin/env python3
"""Push OCI artifacts with the Python ORAS client (PyPI `oras`) and check the
referrers API of a registry.

Usage:
    python3 tests/clients/oras_referrers.py HOST:PORT REPOSITORY \
        [--tls] [--ca-file FILE] [--user USER:PASSWORD] [--auth-backend auto|token|basic]

What it does (every step is printed; exit 0 only if every check passes):
  1. artifact A ("subject"): high-level `OrasClient.push()` of one file, with
     a custom config media type (`application/vnd.berth.test.subject.v1+json`)
     and manifest annotations, pushed to tag `subject-<rand>`.
  2. artifact B ("referrer"): low-level `upload_blob()` + `upload_manifest()`
     of a manifest with an explicit `artifactType`
     (`application/vnd.berth.test.signature.v1`), the empty config
     (`application/vnd.oci.empty.v1+json`, `{}`) and `subject` = A; pushed to
     tag `sig-<rand>`. `OrasClient.push()` cannot set `artifactType` (oras-py
     0.2.x), hence the low-level calls.
  3. artifact C: high-level `push(..., subject=oras.oci.Subject(...))` with a
     config media type `application/vnd.berth.test.sbom.v1+json` and no
     `artifactType` field: in the referrers list its artifactType must be its
     config media type (distribution-spec 1.1).
  4. GET /v2/<repo>/referrers/<digest of A>: must be 200, an OCI image index,
     listing B with artifactType `application/vnd.berth.test.signature.v1` and
     C with `application/vnd.berth.test.sbom.v1+json` (digest, size, mediaType
     and annotations checked too); with `?artifactType=` the filter must be
     honoured when the registry says so in `OCI-Filters-Applied`; the referrers
     of an unknown digest must be 200 with an empty list.
  The manifest PUTs with a subject must answer `OCI-Subject: <digest of A>`.

When it gets that far (all pushes done, referrers API answering), the last line
it prints is one JSON object: {"result": "pass"|"fail", "repository": REPO,
"subject"|"signature"|"sbom": {"tag", "digest", "size"[, "artifactType"]}}.

Against CNCF distribution 2.8 (Debian `docker-registry`) the pushes pass and
the referrers step fails with 404: that registry has no referrers API.
"""

import argparse
import hashlib
import json
import os
import secrets
import sys
import tempfile
import urllib.parse

try:
    import oras.client
    import oras.defaults
    import oras.oci
    import requests
except ImportError:  # pragma: no cover
    print("FAIL: the Python package `oras` is not installed (pip install oras)", file=sys.stderr)
    sys.exit(2)

MANIFEST_MT = "application/vnd.oci.image.manifest.v1+json"
INDEX_MT = "application/vnd.oci.image.index.v1+json"
EMPTY_MT = "application/vnd.oci.empty.v1+json"
EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
SUBJECT_CONFIG_MT = "application/vnd.berth.test.subject.v1+json"
SIG_ARTIFACT_TYPE = "application/vnd.berth.test.signature.v1"
SBOM_CONFIG_MT = "application/vnd.berth.test.sbom.v1+json"
FILE_MT = "application/vnd.berth.test.file.v1+txt"

failures = []


def step(msg):
    print(f"--- {msg}", flush=True)


def check(cond, msg):
    if cond:
        print(f"  ok: {msg}", flush=True)
    else:
        print(f"  FAIL: {msg}", flush=True)
        failures.append(msg)
    return cond


def fatal(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("registry", help="HOST:PORT of the registry, e.g. 127.0.0.1:5000")
    ap.add_argument("repository", help="repository name, e.g. project/artifacts")
    ap.add_argument("--tls", action="store_true", help="use https (default: plain http)")
    ap.add_argument("--ca-file", help="CA bundle for https")
    ap.add_argument("--user", help="USER:PASSWORD for the registry")
    ap.add_argument(
        "--auth-backend",
        default="auto",
        choices=["auto", "token", "basic"],
        help="oras-py auth backend; auto picks from the WWW-Authenticate of GET /v2/",
    )
    args = ap.parse_args()

    host, repo = args.registry, args.repository.strip("/")
    scheme = "https" if args.tls else "http"
    tls_verify = args.ca_file if args.ca_file else True
    backend = args.auth_backend
    if backend == "auto":
        # oras-py's "token" backend answers a Basic challenge by fetching its
        # realm as a URL, so pick the backend from the registry's challenge.
        try:
            r = requests.get(f"{scheme}://{host}/v2/", verify=tls_verify, timeout=30)
        except requests.exceptions.RequestException as e:
            fatal(f"cannot reach {scheme}://{host}/v2/: {e}")
        challenge = r.headers.get("WWW-Authenticate", "")
        backend = "basic" if challenge.lower().startswith("basic") else "token"
        print(f"GET /v2/ -> {r.status_code}, WWW-Authenticate {challenge!r}: auth backend {backend}", flush=True)
        if backend == "basic" and not args.user:
            fatal("the registry asks for Basic auth: pass --user USER:PASSWORD")
    client = oras.client.OrasClient(
        hostname=host,
        insecure=not args.tls,
        tls_verify=tls_verify,
        auth_backend=backend,
    )
    if args.user:
        user, _, password = args.user.partition(":")
        # Not client.login(): that also writes ~/.docker/config.json.
        client.auth.set_basic_auth(user, password)

    base = f"{scheme}://{host}/v2/{repo}"
    rand = secrets.token_hex(4)
    with tempfile.TemporaryDirectory(prefix="oras-referrers-") as work:
        try:
            return run(client, host, repo, base, rand, work)
        except requests.exceptions.RequestException as e:
            fatal(f"HTTP error talking to {host}: {e}")
        except ValueError as e:  # oras-py raises ValueError for auth and parse problems
            fatal(f"oras client error: {e}")


def run(client, host, repo, base, rand, work):

    def get_manifest_raw(ref):
        r = client.do_request(
            f"{base}/manifests/{ref}",
            "GET",
            headers={"Accept": f"{MANIFEST_MT}, {INDEX_MT}"},
        )
        if r.status_code != 200:
            fatal(f"GET {base}/manifests/{ref} -> {r.status_code} {r.text[:300]}")
        return r.content, r.headers

    def write(name, data):
        path = os.path.join(work, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    # ---- 1. subject artifact, high-level push ---------------------------------
    step(f"push artifact A (subject) to {host}/{repo}:subject-{rand} with OrasClient.push()")
    file_a = write("subject.txt", f"berth subject artifact {rand}\n".encode())
    cfg_a = write("subject-config.json", json.dumps({"berth": rand}).encode())
    ref_a = f"{host}/{repo}:subject-{rand}"
    resp = client.push(
        target=ref_a,
        files=[f"{file_a}:{FILE_MT}"],
        manifest_config=f"{cfg_a}:{SUBJECT_CONFIG_MT}",
        manifest_annotations={"org.example.berth.role": "subject"},
        disable_path_validation=True,
        quiet=True,
    )
    check(resp.status_code == 201, f"PUT manifest answered {resp.status_code} (want 201)")
    raw_a, hdr_a = get_manifest_raw(f"subject-{rand}")
    digest_a = "sha256:" + sha256_hex(raw_a)
    check(
        resp.headers.get("Docker-Content-Digest") == digest_a,
        f"PUT Docker-Content-Digest {resp.headers.get('Docker-Content-Digest')} == sha256 of stored bytes {digest_a}",
    )
    man_a = json.loads(raw_a)
    check(man_a["config"]["mediaType"] == SUBJECT_CONFIG_MT, "A's config mediaType kept")
    subject = oras.oci.Subject(mediaType=MANIFEST_MT, digest=digest_a, size=len(raw_a))

    # ---- 2. referrer with explicit artifactType, low-level calls --------------
    step(f"push artifact B (artifactType {SIG_ARTIFACT_TYPE}, subject A) with upload_blob()+upload_manifest()")
    container_b = client.get_container(f"{host}/{repo}:sig-{rand}")
    client.auth.load_configs(container_b)
    file_b = write("signature.txt", f"berth fake signature over {digest_a}\n".encode())
    layer_b = oras.oci.NewLayer(file_b, media_type="application/vnd.berth.test.signature.payload")
    layer_b["annotations"] = {oras.defaults.annotation_title: "signature.txt"}
    r = client.upload_blob(file_b, container_b, layer_b)
    check(r.status_code in (200, 201), f"upload layer blob -> {r.status_code}")
    empty_path = write("empty.json", b"{}")
    empty_conf = {"mediaType": EMPTY_MT, "digest": EMPTY_DIGEST, "size": 2}
    r = client.upload_blob(empty_path, container_b, empty_conf)
    check(r.status_code in (200, 201), f"upload empty config blob -> {r.status_code}")
    annotations_b = {"org.example.berth.role": "signature", "org.opencontainers.image.created": "2024-01-01T00:00:00Z"}
    manifest_b = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MT,
        "artifactType": SIG_ARTIFACT_TYPE,
        "config": empty_conf,
        "layers": [layer_b],
        "subject": {"mediaType": subject.mediaType, "digest": subject.digest, "size": subject.size},
        "annotations": annotations_b,
    }
    r = client.upload_manifest(manifest_b, container_b)
    check(r.status_code == 201, f"PUT manifest B -> {r.status_code} (want 201) {r.text[:200] if r.status_code >= 300 else ''}")
    if r.status_code >= 300:
        fatal("registry refused manifest B (artifactType + subject)")
    check(
        r.headers.get("OCI-Subject") == digest_a,
        f"PUT manifest B answered OCI-Subject: {r.headers.get('OCI-Subject')!r} (want {digest_a}; "
        "a registry with the referrers API MUST send it)",
    )
    raw_b, _ = get_manifest_raw(f"sig-{rand}")
    digest_b = "sha256:" + sha256_hex(raw_b)
    check(r.headers.get("Docker-Content-Digest") == digest_b, f"B stored as {digest_b}")
    check(json.loads(raw_b).get("artifactType") == SIG_ARTIFACT_TYPE, "B's artifactType kept")

    # ---- 3. referrer without artifactType, high-level push with subject -------
    step(f"push artifact C (config {SBOM_CONFIG_MT}, no artifactType, subject A) with OrasClient.push(subject=...)")
    file_c = write("sbom.json", json.dumps({"sbom": rand}).encode())
    cfg_c = write("sbom-config.json", b"{}")
    resp_c = client.push(
        target=f"{host}/{repo}:sbom-{rand}",
        files=[f"{file_c}:application/vnd.berth.test.sbom.payload+json"],
        manifest_config=f"{cfg_c}:{SBOM_CONFIG_MT}",
        manifest_annotations={"org.example.berth.role": "sbom"},
        subject=subject,
        disable_path_validation=True,
        quiet=True,
    )
    check(resp_c.status_code == 201, f"PUT manifest C -> {resp_c.status_code}")
    check(
        resp_c.headers.get("OCI-Subject") == digest_a,
        f"PUT manifest C answered OCI-Subject: {resp_c.headers.get('OCI-Subject')!r} (want {digest_a})",
    )
    raw_c, _ = get_manifest_raw(f"sbom-{rand}")
    digest_c = "sha256:" + sha256_hex(raw_c)
    annotations_c = json.loads(raw_c).get("annotations")

    print(f"pushes done: A={digest_a} B={digest_b} C={digest_c}", flush=True)

    # ---- 4. referrers API --------------------------------------------------------
    url = f"{base}/referrers/{digest_a}"
    step(f"GET {url}")
    r = client.do_request(url, "GET", headers={"Accept": INDEX_MT})
    if r.status_code != 200:
        fatal(
            f"referrers API: GET {url} -> HTTP {r.status_code} {r.text[:300]!r}. "
            "The registry has no (working) OCI 1.1 referrers API "
            "(expected with CNCF distribution 2.8 / Debian docker-registry)."
        )
    ctype = r.headers.get("Content-Type", "")
    check(ctype.split(";")[0].strip() == INDEX_MT, f"Content-Type {ctype!r} is {INDEX_MT}")
    try:
        index = r.json()
    except ValueError:
        fatal(f"referrers response is not JSON: {r.text[:300]!r}")
    check(index.get("schemaVersion") == 2, "index schemaVersion 2")
    check(index.get("mediaType") == INDEX_MT, f"index mediaType {index.get('mediaType')!r}")
    descs = {d.get("digest"): d for d in index.get("manifests") or []}
    print(f"  referrers listed: {json.dumps(index.get('manifests'), indent=None)}", flush=True)

    for name, dig, raw, want_type, want_ann in (
        ("B", digest_b, raw_b, SIG_ARTIFACT_TYPE, annotations_b),
        ("C", digest_c, raw_c, SBOM_CONFIG_MT, annotations_c),
    ):
        d = descs.get(dig)
        if not check(d is not None, f"artifact {name} ({dig}) is listed"):
            continue
        check(
            d.get("artifactType") == want_type,
            f"{name}'s artifactType {d.get('artifactType')!r} == {want_type!r}",
        )
        check(d.get("mediaType") == MANIFEST_MT, f"{name}'s mediaType {d.get('mediaType')!r}")
        check(d.get("size") == len(raw), f"{name}'s size {d.get('size')} == {len(raw)}")
        check(d.get("annotations") == want_ann, f"{name}'s annotations {d.get('annotations')!r}")
    check(digest_a not in descs, "the subject itself is not listed")

    url_f = f"{url}?{urllib.parse.urlencode({'artifactType': SIG_ARTIFACT_TYPE})}"
    step(f"GET {url_f}")
    r = client.do_request(url_f, "GET", headers={"Accept": INDEX_MT})
    check(r.status_code == 200, f"filtered referrers -> {r.status_code}")
    if r.status_code == 200:
        applied = r.headers.get("OCI-Filters-Applied", "")
        listed = [d.get("digest") for d in r.json().get("manifests") or []]
        if "artifactType" in [s.strip() for s in applied.split(",")]:
            check(listed == [digest_b], f"filter applied: only B listed ({listed})")
        else:
            print(f"  note: OCI-Filters-Applied absent ({applied!r}); filtering left to the client", flush=True)
            check(digest_b in listed, "B listed in unfiltered answer")

    unknown = "sha256:" + sha256_hex(secrets.token_bytes(16))
    url_u = f"{base}/referrers/{unknown}"
    step(f"GET {url_u} (unknown subject)")
    r = client.do_request(url_u, "GET", headers={"Accept": INDEX_MT})
    check(r.status_code == 200, f"unknown subject -> {r.status_code} (want 200, empty index)")
    if r.status_code == 200:
        check((r.json().get("manifests") or []) == [], "unknown subject has no referrers")

    if failures:
        print(f"{len(failures)} check(s) failed:", flush=True)
        for f in failures:
            print(f"  - {f}", flush=True)
    else:
        print("PASS: referrers API lists both referrers with the right artifactType", flush=True)
    # Machine-readable last line, for tests that go on to check the registry themselves.
    pushed = {
        "subject": {"tag": f"subject-{rand}", "digest": digest_a, "size": len(raw_a)},
        "signature": {"tag": f"sig-{rand}", "digest": digest_b, "size": len(raw_b), "artifactType": SIG_ARTIFACT_TYPE},
        "sbom": {"tag": f"sbom-{rand}", "digest": digest_c, "size": len(raw_c), "artifactType": SBOM_CONFIG_MT},
    }
    print(json.dumps({"result": "fail" if failures else "pass", "repository": repo, **pushed}), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
