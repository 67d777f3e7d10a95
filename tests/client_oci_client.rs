//! The `oci-client` crate, a third-party Rust OCI client, pushing to and pulling from Berth.

mod common;
use common::*;

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

fn oci(protocol: ClientProtocol, monolithic: bool) -> Client {
    Client::new(ClientConfig {
        protocol,
        use_monolithic_push: monolithic,
        ..Default::default()
    })
}

fn layers() -> Vec<ImageLayer> {
    // One layer bigger than the client's chunk size so that the chunked push path runs.
    let big: Vec<u8> = (0..9 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    vec![
        ImageLayer::oci_v1(b"first layer".to_vec(), None),
        ImageLayer::oci_v1_gzip(big, None),
    ]
}

async fn push_then_pull(monolithic: bool) {
    let b = Berth::start();
    let client = oci(ClientProtocol::Http, monolithic);
    let reference: Reference = format!("{}/team/app:1.0.0", b.host()).parse().unwrap();
    let config = Config::oci_v1(br#"{"architecture":"amd64","os":"linux"}"#.to_vec(), None);
    let pushed_layers = layers();
    let pushed = client
        .push(
            &reference,
            &pushed_layers,
            config.clone(),
            &RegistryAuth::Anonymous,
            None,
        )
        .await
        .expect("oci-client push");
    assert!(
        pushed.manifest_url.contains("/v2/team/app/manifests/"),
        "{}",
        pushed.manifest_url
    );

    // A fresh client, so nothing is cached on the client side.
    let pulled = oci(ClientProtocol::Http, false)
        .pull(
            &reference,
            &RegistryAuth::Anonymous,
            vec![
                oci_client::manifest::IMAGE_LAYER_MEDIA_TYPE,
                oci_client::manifest::IMAGE_LAYER_GZIP_MEDIA_TYPE,
            ],
        )
        .await
        .expect("oci-client pull");
    assert_eq!(pulled.layers.len(), pushed_layers.len());
    // oci-client fetches layers concurrently, so match them by media type, not by order.
    for want in &pushed_layers {
        let got = pulled
            .layers
            .iter()
            .find(|l| l.media_type == want.media_type)
            .unwrap_or_else(|| panic!("no pulled layer of type {}", want.media_type));
        assert_eq!(
            got.data, want.data,
            "layer bytes differ after the round trip"
        );
    }
    assert_eq!(pulled.config.data, config.data);

    // The digest the client computed is the one the registry serves.
    let (_, digest) = oci(ClientProtocol::Http, false)
        .pull_manifest(&reference, &RegistryAuth::Anonymous)
        .await
        .expect("pull manifest");
    assert_eq!(Some(digest.clone()), pulled.digest);
    let r = common::client()
        .head(b.url("/v2/team/app/manifests/1.0.0"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["docker-content-digest"].to_str().unwrap(),
        digest
    );

    let tags = oci(ClientProtocol::Http, false)
        .list_tags(&reference, &RegistryAuth::Anonymous, None, None)
        .await
        .expect("list tags");
    assert_eq!(tags.tags, vec!["1.0.0".to_string()]);
}

#[tokio::test]
async fn oci_client_chunked_push_and_pull_round_trip() {
    push_then_pull(false).await;
}

#[tokio::test]
async fn oci_client_monolithic_push_and_pull_round_trip() {
    push_then_pull(true).await;
}

#[tokio::test]
async fn oci_client_over_https_with_configured_certificate() {
    let tls = TestCert::generate();
    let b = Berth::start_with(Options {
        tls: Some((tls.cert.clone(), tls.key.clone())),
        ..Default::default()
    });
    assert!(b.base.starts_with("https://"));
    let client = Client::new(ClientConfig {
        protocol: ClientProtocol::Https,
        extra_root_certificates: vec![oci_client::client::Certificate {
            encoding: oci_client::client::CertificateEncoding::Pem,
            data: std::fs::read(&tls.ca).unwrap(),
        }],
        ..Default::default()
    });
    let reference: Reference = format!("{}/secure/app:v1", b.host()).parse().unwrap();
    client
        .push(
            &reference,
            &[ImageLayer::oci_v1(b"tls layer".to_vec(), None)],
            Config::oci_v1(b"{}".to_vec(), None),
            &RegistryAuth::Anonymous,
            None,
        )
        .await
        .expect("push over https");
    let pulled = client
        .pull(
            &reference,
            &RegistryAuth::Anonymous,
            vec![oci_client::manifest::IMAGE_LAYER_MEDIA_TYPE],
        )
        .await
        .expect("pull over https");
    assert_eq!(pulled.layers[0].data, b"tls layer");
}

/// Through the token flow: oci-client logs in with a robot's secret (Basic credentials at
/// the token endpoint), pushes into a private project and pulls back; anonymously it can
/// neither push nor pull there.
#[tokio::test]
async fn oci_client_pushes_and_pulls_with_a_robot_through_the_token_flow() {
    let b = Berth::start_with(Options {
        env: vec![
            ("BERTH_AUTH__MODE".into(), "builtin".into()),
            (
                "BERTH_AUTH__ADMIN_PASSWORD".into(),
                "oci-admin-pass-1".into(),
            ),
        ],
        ..Default::default()
    });
    b.cli_ok(&["project", "create", "secret"]);
    let (robot, secret) = b.create_robot(&[
        "rusty",
        "--project",
        "secret",
        "--access",
        "repository:pull",
        "--access",
        "repository:push",
    ]);
    let auth = RegistryAuth::Basic(robot, secret);
    let reference: Reference = format!("{}/secret/app:1.0", b.host()).parse().unwrap();
    let config = Config::oci_v1(br#"{"architecture":"amd64","os":"linux"}"#.to_vec(), None);
    let layer = vec![ImageLayer::oci_v1(b"robot layer".to_vec(), None)];
    let anon = oci(ClientProtocol::Http, true)
        .push(
            &reference,
            &layer,
            config.clone(),
            &RegistryAuth::Anonymous,
            None,
        )
        .await;
    assert!(anon.is_err(), "an anonymous push into a private project");
    oci(ClientProtocol::Http, false)
        .push(&reference, &layer, config, &auth, None)
        .await
        .expect("push with the robot");
    let media = vec![oci_client::manifest::IMAGE_LAYER_MEDIA_TYPE];
    let pulled = oci(ClientProtocol::Http, false)
        .pull(&reference, &auth, media.clone())
        .await
        .expect("pull with the robot");
    assert_eq!(pulled.layers[0].data.as_slice(), b"robot layer");
    let anon = oci(ClientProtocol::Http, false)
        .pull(&reference, &RegistryAuth::Anonymous, media)
        .await;
    assert!(anon.is_err(), "an anonymous pull from a private project");
}
