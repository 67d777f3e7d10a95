//! The REST API's OpenAPI document: served at `/api/v2.0/openapi.json`, printed by
//! `berth openapi`, kept in the repository as `docs/openapi.json`; the three are one
//! document, and every operation it lists is routed.

mod common;

use common::*;
use serde_json::Value;

const IN_REPOSITORY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
const REGENERATE: &str = "run `cargo run -- openapi > docs/openapi.json` and commit it";

fn kept() -> (String, Value) {
    let text = std::fs::read_to_string(IN_REPOSITORY).expect("docs/openapi.json");
    let doc = serde_json::from_str(&text).expect("docs/openapi.json is JSON");
    (text, doc)
}

async fn served(b: &Berth) -> Value {
    let r = client()
        .get(b.url("/api/v2.0/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "no credentials needed");
    assert_eq!(header_str(&r, "content-type"), "application/json");
    r.json().await.expect("the served document is JSON")
}

/// Every operation: (path, method, operation).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("a path item") {
            ops.push((path.clone(), method.clone(), op.clone()));
        }
    }
    ops
}

#[tokio::test]
async fn the_served_document_is_the_one_in_the_repository() {
    let b = Berth::builtin(&[]);
    let (_, kept) = kept();
    assert!(
        served(&b).await == kept,
        "docs/openapi.json differs from the API the code serves: {REGENERATE}"
    );
}

#[test]
fn berth_openapi_prints_the_document_in_the_repository() {
    // No database: the data directory does not exist and is not created.
    let nowhere = std::env::temp_dir().join(format!("berth-openapi-{}", uuid::Uuid::new_v4()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("openapi")
        .env_remove("BERTH_CONFIG")
        .env("BERTH_DATA_DIR", &nowhere)
        .env("BERTH_DATABASE__URL", "postgres://127.0.0.1:1/none")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !nowhere.exists(),
        "berth openapi touched the data directory"
    );
    let (text, _) = kept();
    assert!(
        String::from_utf8_lossy(&out.stdout) == text,
        "docs/openapi.json is not what `berth openapi` prints: {REGENERATE}"
    );
}

#[test]
fn the_document_is_openapi_3_with_the_crate_version_and_harbor_names() {
    let (_, doc) = kept();
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(doc["servers"][0]["url"], "/api/v2.0");
    assert_eq!(
        doc["components"]["securitySchemes"]["basic"],
        serde_json::json!({"type": "http", "scheme": "basic"})
    );
    let tags: Vec<&str> = doc["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "Project",
        "ProjectReq",
        "ProjectMember",
        "ProjectMemberEntity",
        "Repository",
        "Artifact",
        "Tag",
        "Robot",
        "RobotCreate",
        "RobotCreated",
        "RobotSec",
        "RobotPermission",
        "Access",
        "UserResp",
        "UserCreationReq",
        "GeneralInfo",
        "Errors",
        "Error",
    ] {
        assert!(schemas.contains_key(name), "no schema {name}");
    }
    assert_eq!(
        doc["components"]["schemas"]["Errors"]["properties"]["errors"]["items"]["$ref"],
        "#/components/schemas/Error"
    );

    let mut ids = std::collections::BTreeSet::new();
    for (path, method, op) in operations(&doc) {
        let what = format!("{} {path}", method.to_uppercase());
        let responses = op["responses"].as_object().expect("responses");
        assert!(!responses.is_empty(), "{what} lists no response");
        let id = op["operationId"].as_str().expect("operationId");
        assert!(ids.insert(id.to_string()), "{what}: operationId {id} twice");
        let tag = op["tags"][0].as_str().unwrap_or_default();
        assert!(tags.contains(&tag), "{what}: tag {tag:?} is not declared");
        // Every parameter the path template names is declared, once.
        for name in path.split('{').skip(1).filter_map(|s| s.split('}').next()) {
            let declared = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter(|p| p["in"] == "path" && p["name"] == name)
                        .count()
                })
                .unwrap_or(0);
            assert_eq!(declared, 1, "{what}: path parameter {name}");
        }
        // Refusals carry Harbor's error body.
        for (status, response) in responses {
            if status.starts_with('4') {
                let r = response["$ref"].as_str().unwrap_or_default();
                let name = r.trim_start_matches("#/components/responses/");
                let schema = &doc["components"]["responses"][name]["content"]["application/json"]["schema"]
                    ["$ref"];
                assert_eq!(schema, "#/components/schemas/Errors", "{what} {status}");
            }
        }
    }
    // Every reference resolves.
    let text = doc.to_string();
    for r in text.split("\"$ref\":\"").skip(1) {
        let target = r.split('"').next().unwrap();
        let mut at = &doc;
        for part in target.trim_start_matches("#/").split('/') {
            at = &at[part];
        }
        assert!(!at.is_null(), "{target} does not resolve");
    }
}

/// A stand-in for a path parameter.
fn placeholder(name: &str) -> &'static str {
    match name {
        "project_name_or_id" => "library",
        "repository_name" => "nothing%252Fhere",
        "reference" | "tag_name" => "latest",
        _ => "1",
    }
}

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let b = Berth::builtin(&[]);
    let doc = served(&b).await;
    let base = doc["servers"][0]["url"].as_str().unwrap().to_string();
    let ops = operations(&doc);
    assert!(ops.len() >= 30, "{} operations", ops.len());
    for (path, method, _) in ops {
        let mut concrete = String::new();
        for (i, part) in path.split('{').enumerate() {
            match part.split_once('}') {
                Some((name, rest)) if i > 0 => {
                    concrete.push_str(placeholder(name));
                    concrete.push_str(rest);
                }
                _ => concrete.push_str(part),
            }
        }
        let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let body =
            matches!(method.as_str(), "post" | "put" | "patch").then(|| serde_json::json!({}));
        // Without credentials: a routed operation answers 200, 400 or 401, never the
        // router's 404 or 405.
        let r = api_send(&b, m, &format!("{base}{concrete}"), None, body).await;
        let status = r.status().as_u16();
        assert!(
            ![404, 405].contains(&status),
            "{} {path} (as {concrete}) is documented but answers {status}",
            method.to_uppercase()
        );
    }
    // And the check can fail: a path nobody routed is 404.
    let r = api_send(
        &b,
        reqwest::Method::GET,
        &format!("{base}/not-an-api"),
        None,
        None,
    )
    .await;
    assert_eq!(r.status(), 404);
}
