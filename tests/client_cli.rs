//! Real container clients — buildah, podman, skopeo, containerd's `ctr` and the Python
//! ORAS client — against the real `berth` binary, following the verified recipes of
//! `docs/testing-clients.md`.
//!
//! Every test that uses podman/buildah/skopeo gets its own containers directory
//! ([`Containers`]: storage, runroot, libpod tmp, registries.conf, auth file) passed as
//! environment to each command, so tests run in parallel without sharing images or
//! touching the machine's global container state. Each test has its own server and
//! repository names. Every client command runs with a time limit and, when it fails,
//! the test panics with the command line, its output and the server's log.

mod common;
use common::containers::*;
use common::*;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// What `buildah commit --format FORMAT` makes, and the media types of what gets pushed.
#[derive(Clone, Copy)]
struct Kind {
    format: &'static str,
    manifest: &'static str,
    config: &'static str,
    layer: &'static str,
}

const OCI_IMAGE: Kind = Kind {
    format: "oci",
    manifest: OCI_MANIFEST,
    config: OCI_CONFIG,
    layer: "application/vnd.oci.image.layer.v1.tar+gzip",
};

/// Docker image manifest v2, schema 2.
const DOCKER_IMAGE: Kind = Kind {
    format: "docker",
    manifest: DOCKER_MANIFEST,
    config: "application/vnd.docker.container.image.v1+json",
    layer: "application/vnd.docker.image.rootfs.diff.tar.gzip",
};

fn read_trimmed(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_string()
}

fn parse_json(what: &str, text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{what} is not JSON ({e}): {text:?}"))
}

/// Every file under `dir`, by path relative to it, with its bytes.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("read dir {}: {e}", d.display())) {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes =
                    std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
                out.insert(p.strip_prefix(dir).expect("under dir").to_path_buf(), bytes);
            }
        }
    }
    out
}

// ---- HTTP views of the store -------------------------------------------------------------

/// A manifest as Berth serves it: Content-Type, Docker-Content-Digest and the bytes.
struct Served {
    content_type: String,
    digest: String,
    bytes: Vec<u8>,
}

impl Served {
    fn json(&self) -> Value {
        parse_json("served manifest", &String::from_utf8_lossy(&self.bytes))
    }
}

async fn get_manifest(c: &reqwest::Client, b: &Berth, repo: &str, reference: &str) -> Served {
    let r = get_any_manifest(c, b, repo, reference).await;
    let status = r.status();
    let content_type = header_str(&r, "content-type");
    let digest = header_str(&r, "docker-content-digest");
    let bytes = r.bytes().await.expect("manifest body").to_vec();
    check(
        b,
        status == 200,
        format!(
            "GET /v2/{repo}/manifests/{reference} -> {status}: {}",
            String::from_utf8_lossy(&bytes)
        ),
    );
    Served {
        content_type,
        digest,
        bytes,
    }
}

async fn get_blob(c: &reqwest::Client, b: &Berth, repo: &str, digest: &str) -> Vec<u8> {
    let r = c
        .get(b.url(&format!("/v2/{repo}/blobs/{digest}")))
        .send()
        .await
        .expect("GET blob");
    let status = r.status();
    let bytes = r.bytes().await.expect("blob body").to_vec();
    check(
        b,
        status == 200,
        format!("GET /v2/{repo}/blobs/{digest} -> {status}"),
    );
    check(
        b,
        sha256(&bytes) == digest,
        format!(
            "blob {digest} of {repo} served bytes that hash to {}",
            sha256(&bytes)
        ),
    );
    bytes
}

/// Asserts that `manifest` (served from `repo`) is what buildah built from `content`: its
/// config is the image `image_id` with our Cmd and label, and every blob it names is
/// served with the right digest.
async fn check_built_image(
    c: &reqwest::Client,
    b: &Berth,
    repo: &str,
    manifest: &Value,
    image_id: &str,
    content: &str,
    kind: Kind,
) {
    check(
        b,
        manifest["mediaType"] == kind.manifest && manifest["config"]["mediaType"] == kind.config,
        format!(
            "want a {} manifest with a {} config: {manifest}",
            kind.manifest, kind.config
        ),
    );
    let config_digest = manifest["config"]["digest"].as_str().unwrap_or_default();
    check(
        b,
        config_digest == format!("sha256:{image_id}"),
        format!("manifest config {config_digest} is not the built image {image_id}: {manifest}"),
    );
    let config = get_blob(c, b, repo, config_digest).await;
    let config = parse_json("image config", &String::from_utf8_lossy(&config));
    check(
        b,
        config["config"]["Cmd"] == serde_json::json!(["/hello.txt"]),
        format!("config Cmd lost: {config}"),
    );
    check(
        b,
        config["config"]["Labels"]["berth.test"] == content,
        format!("config label lost: {config}"),
    );
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    check(b, layers.len() == 1, format!("want one layer: {manifest}"));
    check(
        b,
        layers[0]["mediaType"] == kind.layer,
        format!("layer media type is not {}: {manifest}", kind.layer),
    );
    let layer_digest = layers[0]["digest"].as_str().unwrap_or_default();
    let layer = get_blob(c, b, repo, layer_digest).await;
    check(
        b,
        layers[0]["size"].as_u64() == Some(layer.len() as u64),
        format!("layer size in manifest != {} served bytes", layer.len()),
    );
    check(
        b,
        layer.starts_with(&[0x1f, 0x8b]),
        "pushed layer is not gzip",
    );
}

// ---- 1. buildah + podman ------------------------------------------------------------------

async fn podman_round_trip(kind: Kind) {
    let (format, want_type) = (kind.format, kind.manifest);
    let b = Berth::start();
    let c = Containers::new();
    let http = client();
    let id = unique();
    let content = format!("hello from berth {id}");
    let repo = format!("cli/podman-{format}-{id}");
    let tag = "v1";
    let local = format!("localhost/berth-build-{id}:{tag}");
    let remote = format!("{}/{repo}:{tag}", b.host());

    let image_id = c.build_image(&b, &local, &content, format);
    let mut push = c.cmd("podman");
    push.args([
        "push",
        "-q",
        "--tls-verify=false",
        "--digestfile",
        &c.p("pushed.digest"),
        &local,
        &remote,
    ]);
    must(&b, &mut push);
    let pushed = read_trimmed(&c.path("pushed.digest"));

    // What the registry now serves under the tag is what podman says it pushed.
    let served = get_manifest(&http, &b, &repo, tag).await;
    check(
        &b,
        served.digest == pushed,
        format!(
            "Docker-Content-Digest {} != podman's digest file {pushed}",
            served.digest
        ),
    );
    check(
        &b,
        sha256(&served.bytes) == pushed,
        format!(
            "served manifest bytes hash to {}, podman pushed {pushed}",
            sha256(&served.bytes)
        ),
    );
    check(
        &b,
        served.content_type == want_type,
        format!(
            "served Content-Type {:?}, want {want_type}",
            served.content_type
        ),
    );
    let manifest = served.json();
    check(
        &b,
        manifest["mediaType"] == want_type,
        format!("manifest mediaType is not {want_type}: {manifest}"),
    );
    check_built_image(&http, &b, &repo, &manifest, &image_id, &content, kind).await;
    check(
        &b,
        catalog_of(&http, &b).await.contains(&repo),
        format!("{repo} missing from the catalog"),
    );
    let tags = tags_of(&http, &b, &repo).await;
    check(
        &b,
        tags == Some(vec![tag.to_string()]),
        format!("tags of {repo}: {tags:?}"),
    );

    // Forget the image locally, then pull it back.
    must(&b, c.cmd("podman").args(["rmi", &local]));
    let left = must(&b, c.cmd("podman").args(["images", "-q"]));
    check(
        &b,
        left.stdout.trim().is_empty(),
        format!("images left after podman rmi: {:?}", left.stdout),
    );
    must(
        &b,
        c.cmd("podman")
            .args(["pull", "-q", "--tls-verify=false", &remote]),
    );
    let inspect = must(
        &b,
        c.cmd("podman").args([
            "image",
            "inspect",
            "--format",
            "{{.Id}} {{.Digest}}",
            &remote,
        ]),
    );
    let got: Vec<&str> = inspect.stdout.split_whitespace().collect();
    check(
        &b,
        got == [image_id.as_str(), pushed.as_str()],
        format!(
            "pulled image is `{}`, want id {image_id} digest {pushed}",
            inspect.stdout.trim()
        ),
    );

    // The pulled image's filesystem holds the file we built it from.
    let mount = must(&b, c.cmd("podman").args(["image", "mount", &remote]));
    let root = PathBuf::from(mount.stdout.trim());
    let file = std::fs::read_to_string(root.join("hello.txt"));
    let _ = run(c.cmd("podman").args(["image", "unmount", &remote]));
    check(
        &b,
        file.as_deref().ok() == Some(content.as_str()),
        format!("/hello.txt of the pulled image: {file:?}, want {content:?}"),
    );
}

#[tokio::test]
async fn podman_buildah_build_push_rmi_pull() {
    podman_round_trip(OCI_IMAGE).await;
}

#[tokio::test]
async fn podman_buildah_docker_schema2_build_push_rmi_pull() {
    podman_round_trip(DOCKER_IMAGE).await;
}

// ---- 2. skopeo ----------------------------------------------------------------------------

/// The manifest digest an OCI layout's index.json names for `tag`.
fn layout_digest(b: &Berth, layout: &Path, tag: &str) -> String {
    let index = parse_json(
        "index.json",
        &std::fs::read_to_string(layout.join("index.json")).expect("read index.json"),
    );
    let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
    let found: Vec<&Value> = manifests
        .iter()
        .filter(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .collect();
    check(
        b,
        found.len() == 1,
        format!(
            "{}: want one manifest tagged {tag}: {index}",
            layout.display()
        ),
    );
    found[0]["digest"].as_str().unwrap_or_default().to_string()
}

fn skopeo_tags(b: &Berth, c: &Containers, repo_ref: &str) -> Vec<String> {
    let ran = must(
        b,
        c.cmd("skopeo")
            .args(["list-tags", "--tls-verify=false", repo_ref]),
    );
    let v = parse_json("skopeo list-tags output", &ran.stdout);
    let mut tags: Vec<String> = v["Tags"]
        .as_array()
        .unwrap_or_else(|| panic!("list-tags without Tags: {v}"))
        .iter()
        .filter_map(|t| t.as_str().map(String::from))
        .collect();
    tags.sort();
    tags
}

/// Recipe b: buildah image -> OCI layout -> skopeo push -> copy back -> compare,
/// inspect, list-tags, a second tag, delete by digest.
async fn skopeo_round_trip(b: &Berth, http: &reqwest::Client) {
    let c = Containers::new();
    let id = unique();
    let content = format!("skopeo {id}");
    let repo = format!("cli/skopeo-{id}");
    let local = format!("localhost/berth-skopeo-{id}:v1");
    let image_id = c.build_image(b, &local, &content, "oci");

    let layout1 = c.path("layout1");
    must(
        b,
        c.cmd("skopeo").args([
            "copy",
            "-q",
            &c.storage_ref(&local),
            &format!("oci:{}:v1", layout1.display()),
        ]),
    );
    let l1 = layout_digest(b, &layout1, "v1");

    let docker_repo = format!("docker://{}/{repo}", b.host());
    let mut push = c.cmd("skopeo");
    push.args([
        "copy",
        "-q",
        "--dest-tls-verify=false",
        "--digestfile",
        &c.p("push.digest"),
        &format!("oci:{}:v1", layout1.display()),
        &format!("{docker_repo}:v1"),
    ]);
    must(b, &mut push);
    let pushed = read_trimmed(&c.path("push.digest"));
    check(
        b,
        pushed == l1,
        format!("skopeo pushed {pushed}, the layout holds {l1}"),
    );
    let served = get_manifest(http, b, &repo, "v1").await;
    check(
        b,
        served.digest == l1 && sha256(&served.bytes) == l1,
        format!(
            "served Docker-Content-Digest {} / bytes {} != layout {l1}",
            served.digest,
            sha256(&served.bytes)
        ),
    );
    check(
        b,
        served.content_type == OCI_MANIFEST,
        format!("served Content-Type {:?}", served.content_type),
    );
    check(
        b,
        served.bytes
            == std::fs::read(layout1.join("blobs/sha256").join(&l1["sha256:".len()..]))
                .expect("layout manifest"),
        "served manifest bytes differ from the layout's",
    );
    check_built_image(
        http,
        b,
        &repo,
        &served.json(),
        &image_id,
        &content,
        OCI_IMAGE,
    )
    .await;

    // Copy back into a second layout: same index digest, identical blobs.
    let layout2 = c.path("layout2");
    must(
        b,
        c.cmd("skopeo").args([
            "copy",
            "-q",
            "--src-tls-verify=false",
            &format!("{docker_repo}:v1"),
            &format!("oci:{}:v1", layout2.display()),
        ]),
    );
    let l2 = layout_digest(b, &layout2, "v1");
    check(
        b,
        l2 == l1,
        format!("copied-back layout names {l2}, original {l1}"),
    );
    let (blobs1, blobs2) = (tree(&layout1.join("blobs")), tree(&layout2.join("blobs")));
    check(
        b,
        blobs1.keys().collect::<Vec<_>>() == blobs2.keys().collect::<Vec<_>>(),
        format!(
            "blob files differ: {:?} vs {:?}",
            blobs1.keys().collect::<Vec<_>>(),
            blobs2.keys().collect::<Vec<_>>()
        ),
    );
    check(
        b,
        blobs1 == blobs2,
        "blob file contents differ between the layouts",
    );
    check(
        b,
        blobs1.len() == 3,
        format!("want manifest+config+layer blobs: {:?}", blobs1.keys()),
    );

    // inspect: the raw bytes, and the parsed view (which also uses tags/list).
    let raw = must(
        b,
        c.cmd("skopeo").args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("{docker_repo}:v1"),
        ]),
    );
    check(
        b,
        sha256(&raw.out) == l1,
        format!("skopeo inspect --raw bytes hash to {}", sha256(&raw.out)),
    );
    let inspect = must(
        b,
        c.cmd("skopeo").args([
            "inspect",
            "--tls-verify=false",
            &format!("{docker_repo}:v1"),
        ]),
    );
    let inspect = parse_json("skopeo inspect output", &inspect.stdout);
    check(
        b,
        inspect["Digest"] == l1.as_str() && inspect["RepoTags"] == serde_json::json!(["v1"]),
        format!("skopeo inspect: {inspect}"),
    );

    check(
        b,
        skopeo_tags(b, &c, &docker_repo) == ["v1"],
        "list-tags after the first push",
    );
    // A second tag for the same manifest.
    must(
        b,
        c.cmd("skopeo").args([
            "copy",
            "-q",
            "--dest-tls-verify=false",
            &format!("oci:{}:v1", layout1.display()),
            &format!("{docker_repo}:v2"),
        ]),
    );
    let tags = skopeo_tags(b, &c, &docker_repo);
    check(
        b,
        tags == ["v1", "v2"],
        format!("list-tags after tagging v2: {tags:?}"),
    );
    check(
        b,
        get_manifest(http, b, &repo, "v2").await.digest == l1,
        "v2 does not resolve to the same manifest",
    );
    check(
        b,
        catalog_of(http, b).await.contains(&repo),
        format!("{repo} missing from the catalog"),
    );

    // Delete by digest: the manifest and every tag pointing at it go.
    must(
        b,
        c.cmd("skopeo").args([
            "delete",
            "--tls-verify=false",
            &format!("{docker_repo}@{l1}"),
        ]),
    );
    let r = http
        .get(b.url(&format!("/v2/{repo}/manifests/{l1}")))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .expect("GET deleted manifest");
    expect_error(r, 404, "MANIFEST_UNKNOWN").await;
    for tag in ["v1", "v2"] {
        let r = http
            .get(b.url(&format!("/v2/{repo}/manifests/{tag}")))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .expect("GET deleted tag");
        expect_error(r, 404, "MANIFEST_UNKNOWN").await;
    }
    let tags = tags_of(http, b, &repo).await.unwrap_or_default();
    check(
        b,
        !tags.contains(&"v1".to_string()) && !tags.contains(&"v2".to_string()),
        format!("tags still listed after the delete: {tags:?}"),
    );
    // Deleting again fails. skopeo 1.9 GETs the manifest first and reports a 404 as
    // "Image may not exist"; any other status would be "Failed to delete ...".
    let again = run(c.cmd("skopeo").args([
        "delete",
        "--tls-verify=false",
        &format!("{docker_repo}@{l1}"),
    ]));
    check(
        b,
        !again.success() && again.stderr.contains("Image may not exist"),
        format!(
            "second skopeo delete should fail with a 404 (`Image may not exist`)\n{}",
            again.describe()
        ),
    );
}

#[tokio::test]
async fn skopeo_copy_oci_layout_in_and_out_list_tags_delete() {
    let b = Berth::start();
    skopeo_round_trip(&b, &client()).await;
}

#[tokio::test]
async fn skopeo_copy_oci_layout_in_and_out_list_tags_delete_on_postgres() {
    // Fails (does not skip) without BERTH_TEST_POSTGRES_URL, like every PostgreSQL test:
    // run it through scripts/test.sh, which starts PostgreSQL.
    let b = Berth::start_with(Options {
        database_url: Some(fresh_postgres_db().await),
        ..Options::default()
    });
    skopeo_round_trip(&b, &client()).await;
}

// ---- 3. oras (Python) ---------------------------------------------------------------------

const SIG_ARTIFACT_TYPE: &str = "application/vnd.berth.test.signature.v1";
const SBOM_CONFIG_TYPE: &str = "application/vnd.berth.test.sbom.v1+json";

async fn referrers(
    http: &reqwest::Client,
    b: &Berth,
    repo: &str,
    subject: &str,
    artifact_type: Option<&str>,
) -> (String, String, Value) {
    let mut url = b.url(&format!("/v2/{repo}/referrers/{subject}"));
    if let Some(t) = artifact_type {
        // url-encoded, as oras-go sends it
        url = with_query(
            &url,
            &format!("artifactType={}", t.replace('/', "%2F").replace('+', "%2B")),
        );
    }
    let r = http
        .get(&url)
        .header("accept", OCI_INDEX)
        .send()
        .await
        .expect("GET referrers");
    let status = r.status();
    let content_type = header_str(&r, "content-type");
    let filters = header_str(&r, "oci-filters-applied");
    let text = r.text().await.expect("referrers body");
    check(b, status == 200, format!("GET {url} -> {status}: {text}"));
    (content_type, filters, parse_json("referrers index", &text))
}

fn listed(index: &Value) -> Vec<String> {
    let mut v: Vec<String> = index["manifests"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d["digest"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[tokio::test]
async fn oras_artifact_type_subject_and_referrers() {
    let b = Berth::start();
    let http = client();
    let repo = format!("cli/oras-{}", unique());
    let home = tempfile::tempdir().expect("temp dir");
    let ran = must(&b, &mut oras_script(home.path(), &b.host(), &repo));
    let last = ran.stdout.lines().last().unwrap_or_default();
    let result = parse_json("the script's last output line", last);
    let digest = |k: &str| result[k]["digest"].as_str().unwrap_or_default().to_string();
    let (subject, sig, sbom) = (digest("subject"), digest("signature"), digest("sbom"));
    check(
        &b,
        [&subject, &sig, &sbom]
            .iter()
            .all(|d| d.starts_with("sha256:")),
        format!("script result without digests: {result}"),
    );

    // The pushed manifests as stored.
    for (k, digest) in [("subject", &subject), ("signature", &sig), ("sbom", &sbom)] {
        let tag = result[k]["tag"].as_str().unwrap_or_default();
        let served = get_manifest(&http, &b, &repo, tag).await;
        check(
            &b,
            &served.digest == digest && &sha256(&served.bytes) == digest,
            format!("{k} tag {tag} resolves to {}", served.digest),
        );
        check(
            &b,
            result[k]["size"].as_u64() == Some(served.bytes.len() as u64),
            format!("{k} size {} != {}", result[k]["size"], served.bytes.len()),
        );
    }
    let sig_manifest = get_manifest(&http, &b, &repo, &sig).await.json();
    check(
        &b,
        sig_manifest["artifactType"] == SIG_ARTIFACT_TYPE
            && sig_manifest["subject"]["digest"] == subject.as_str(),
        format!("signature manifest lost artifactType/subject: {sig_manifest}"),
    );
    let mut tags = tags_of(&http, &b, &repo).await.unwrap_or_default();
    tags.sort();
    let mut want: Vec<String> = ["subject", "signature", "sbom"]
        .iter()
        .map(|k| result[k]["tag"].as_str().unwrap_or_default().to_string())
        .collect();
    want.sort();
    check(&b, tags == want, format!("tags {tags:?}, want {want:?}"));

    // The referrers of the subject, unfiltered.
    let (ct, filters, index) = referrers(&http, &b, &repo, &subject, None).await;
    check(
        &b,
        ct == OCI_INDEX,
        format!("referrers Content-Type {ct:?}"),
    );
    check(
        &b,
        filters.is_empty(),
        format!("OCI-Filters-Applied {filters:?} without a filter"),
    );
    check(
        &b,
        index["schemaVersion"] == 2 && index["mediaType"] == OCI_INDEX,
        format!("referrers answer is not an image index: {index}"),
    );
    let mut both = vec![sig.clone(), sbom.clone()];
    both.sort();
    check(
        &b,
        listed(&index) == both,
        format!("referrers {index}, want {both:?}"),
    );
    for d in index["manifests"].as_array().into_iter().flatten() {
        let (want_type, key) = if d["digest"] == sig.as_str() {
            (SIG_ARTIFACT_TYPE, "signature")
        } else {
            (SBOM_CONFIG_TYPE, "sbom")
        };
        check(
            &b,
            d["artifactType"] == want_type
                && d["mediaType"] == OCI_MANIFEST
                && d["size"] == result[key]["size"],
            format!("referrer descriptor {d}, want artifactType {want_type}"),
        );
    }

    // Filtered by artifactType: the registry says it filtered, and did.
    for (t, want) in [
        (SIG_ARTIFACT_TYPE, vec![sig.clone()]),
        (SBOM_CONFIG_TYPE, vec![sbom.clone()]),
        ("application/vnd.berth.none", vec![]),
    ] {
        let (ct, filters, index) = referrers(&http, &b, &repo, &subject, Some(t)).await;
        check(
            &b,
            ct == OCI_INDEX,
            format!("filtered referrers Content-Type {ct:?}"),
        );
        check(
            &b,
            filters.split(',').any(|f| f.trim() == "artifactType"),
            format!("?artifactType={t}: OCI-Filters-Applied is {filters:?}"),
        );
        check(
            &b,
            listed(&index) == want,
            format!("?artifactType={t}: {index}, want {want:?}"),
        );
    }

    // Deleting a referrer takes it off the list.
    let r = http
        .delete(b.url(&format!("/v2/{repo}/manifests/{sig}")))
        .send()
        .await
        .expect("DELETE manifest");
    check(
        &b,
        r.status() == 202,
        format!("DELETE signature manifest -> {}", r.status()),
    );
    let (_, _, index) = referrers(&http, &b, &repo, &subject, None).await;
    check(
        &b,
        listed(&index) == [sbom.clone()],
        format!("referrers after deleting the signature: {index}"),
    );
}

// ---- 4. containerd --------------------------------------------------------------------------

#[tokio::test]
async fn containerd_ctr_pulls_an_image_pushed_by_skopeo() {
    let b = Berth::start();
    let http = client();
    let c = Containers::new();
    let id = unique();
    let content = format!("containerd {id}");
    let repo = format!("cli/ctr-{id}");
    let local = format!("localhost/berth-ctr-{id}:v1");
    let image_id = c.build_image(&b, &local, &content, "oci");
    let remote = format!("{}/{repo}:v1", b.host());
    let mut push = c.cmd("skopeo");
    push.args([
        "copy",
        "-q",
        "--dest-tls-verify=false",
        "--digestfile",
        &c.p("push.digest"),
        &c.storage_ref(&local),
        &format!("docker://{remote}"),
    ]);
    must(&b, &mut push);
    let pushed = read_trimmed(&c.path("push.digest"));
    let served = get_manifest(&http, &b, &repo, "v1").await;
    check(
        &b,
        served.digest == pushed,
        format!("served {} != skopeo's digest {pushed}", served.digest),
    );
    let manifest = served.json();

    let ctrd = Containerd::start();
    must_also(
        &b,
        &mut ctrd.ctr(&["images", "pull", "--plain-http", &remote]),
        &ctrd.log(),
    );
    let ls = must_also(&b, &mut ctrd.ctr(&["images", "ls"]), &ctrd.log());
    let row: Vec<&str> = ls
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cols| cols.first() == Some(&remote.as_str()))
        .unwrap_or_else(|| panic!("{remote} not in `ctr images ls`:\n{}", ls.stdout));
    check(
        &b,
        row.get(2) == Some(&pushed.as_str()),
        format!("ctr lists {remote} as {:?}, pushed {pushed}", row.get(2)),
    );

    // containerd's content store holds exactly the bytes Berth serves.
    let config_digest = format!("sha256:{image_id}");
    check(
        &b,
        manifest["config"]["digest"] == config_digest.as_str(),
        format!("manifest config is not {config_digest}: {manifest}"),
    );
    let layer_digest = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for digest in [
        pushed.as_str(),
        config_digest.as_str(),
        layer_digest.as_str(),
    ] {
        let got = must_also(&b, &mut ctrd.ctr(&["content", "get", digest]), &ctrd.log());
        check(
            &b,
            sha256(&got.out) == digest,
            format!(
                "ctr content get {digest}: {} bytes hashing to {}",
                got.out.len(),
                sha256(&got.out)
            ),
        );
    }
    // ctr also unpacked it: the image's layers are in the snapshotter.
    let check_out = must_also(&b, &mut ctrd.ctr(&["images", "check"]), &ctrd.log());
    check(
        &b,
        check_out
            .stdout
            .lines()
            .any(|l| l.starts_with(&remote) && l.contains("complete")),
        format!("ctr images check:\n{}", check_out.stdout),
    );
}

// ---- 5. HTTPS with Berth's own certificate --------------------------------------------------

#[tokio::test]
async fn podman_push_pull_over_https_trusting_the_registry_ca() {
    let tls = TestCert::generate();
    let b = Berth::start_with(Options {
        tls: Some((tls.cert.clone(), tls.key.clone())),
        ..Options::default()
    });
    assert!(b.base.starts_with("https://"), "{}", b.base);
    let ca_pem = std::fs::read(&tls.ca).expect("read CA");
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca_pem).expect("CA PEM"))
        .build()
        .expect("https client");
    let c = Containers::new();
    let id = unique();
    let content = format!("tls {id}");
    let repo = format!("cli/tls-{id}");
    let local = format!("localhost/berth-tls-{id}:v1");
    let remote = format!("{}/{repo}:v1", b.host());
    let image_id = c.build_image(&b, &local, &content, "oci");
    let certs = c.path("certs");
    std::fs::create_dir_all(&certs).expect("certs dir");
    std::fs::write(certs.join("ca.crt"), &ca_pem).expect("write ca.crt");

    // Without the CA the client refuses the certificate: verification is really on.
    let untrusted = run(c
        .cmd("podman")
        .args(["push", "-q", "--tls-verify=true", &local, &remote]));
    check(
        &b,
        !untrusted.success()
            && untrusted
                .stderr
                .contains("x509: certificate signed by unknown authority"),
        format!(
            "push without the CA should fail certificate verification\n{}",
            untrusted.describe()
        ),
    );
    check(
        &b,
        tags_of(&http, &b, &repo).await.is_none_or(|t| t.is_empty()),
        "the refused push stored a tag",
    );

    let mut push = c.cmd("podman");
    push.args(["push", "-q", "--tls-verify=true", "--cert-dir"])
        .arg(&certs)
        .args(["--digestfile", &c.p("pushed.digest"), &local, &remote]);
    must(&b, &mut push);
    let pushed = read_trimmed(&c.path("pushed.digest"));
    let served = get_manifest(&http, &b, &repo, "v1").await;
    check(
        &b,
        served.digest == pushed && sha256(&served.bytes) == pushed,
        format!(
            "served {} over https, podman pushed {pushed}",
            served.digest
        ),
    );
    check_built_image(
        &http,
        &b,
        &repo,
        &served.json(),
        &image_id,
        &content,
        OCI_IMAGE,
    )
    .await;

    must(&b, c.cmd("podman").args(["rmi", &local]));
    let mut pull = c.cmd("podman");
    pull.args(["pull", "-q", "--tls-verify=true", "--cert-dir"])
        .arg(&certs)
        .arg(&remote);
    must(&b, &mut pull);
    let inspect = must(
        &b,
        c.cmd("podman").args([
            "image",
            "inspect",
            "--format",
            "{{.Id}} {{.Digest}}",
            &remote,
        ]),
    );
    let got: Vec<&str> = inspect.stdout.split_whitespace().collect();
    check(
        &b,
        got == [image_id.as_str(), pushed.as_str()],
        format!(
            "pulled over https `{}`, want id {image_id} digest {pushed}",
            inspect.stdout.trim()
        ),
    );
}
