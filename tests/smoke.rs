mod common;
use common::*;

#[tokio::test]
async fn version_check_answers_with_api_version_header() {
    let b = Berth::start();
    let r = client().get(b.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
}
