//! Full AdmissionReview fixtures through the HTTP router, as the API server sends them.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use base64::Engine;
use kvinject::core::plan::{self, Decision, InjectionPlan, Settings};
use kvinject::webhook::listener::Limits;
use kvinject::webhook::memo::MAX_ENTRY_BYTES;
use kvinject::webhook::{http, review::Reviewer};
use serde_json::Value;
use support::webhook::fixture_facts;
use tower::ServiceExt;

fn fixtures(dir: &str) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(Path::new("tests/fixtures").join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    assert!(!paths.is_empty());
    paths
}

fn settings() -> Settings {
    Settings::new(None, None, "kvinject")
}

/// The router over the fixture facts plus the SecretProviderClasses the `reviews/` pods need, as
/// `serve --facts` runs over the output of `kvinject inject`: the answers then carry only what
/// the webhook says about the pod.
fn router() -> axum::Router {
    let mut facts = fixture_facts();
    for file in fixtures("reviews") {
        let review: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        let namespace = review["request"]["namespace"].as_str().unwrap_or("default");
        let planned = plan::plan_pod(
            &kvinject::core::node::Node::from(&review["request"]["object"]),
            namespace,
            &facts,
            &settings(),
        );
        if let Ok(Decision::Inject(InjectionPlan { generated_spcs, .. })) = planned {
            for spc in generated_spcs {
                facts.add(&spc.manifest(), namespace);
            }
        }
    }
    http::admission_router(Reviewer::new(
        Arc::new(facts),
        settings(),
        Limits::default(),
    ))
}

async fn send(request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let response = router().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = support::webhook::body_bytes(response.into_body()).await;
    (status, headers, body)
}

fn post(body: impl Into<Body>) -> Request<Body> {
    Request::post("/mutate")
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .unwrap()
}

/// The response, with the patch decoded from base64 (after checking it is a base64 string).
async fn review(body: &Value) -> Value {
    review_at("/mutate", body).await
}

async fn review_at(path: &str, body: &Value) -> Value {
    let request = Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap();
    let (status, headers, bytes) = send(request).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let mut answer: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(
        answer["response"]["uid"], body["request"]["uid"],
        "uid echoed"
    );
    if let Some(patch) = answer["response"].get("patch") {
        let text = patch
            .as_str()
            .expect("patch is a base64 string on the wire, as the API server reads []byte");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap();
        answer["response"]["patch"] = serde_json::from_slice(&decoded).unwrap();
        assert_eq!(answer["response"]["patchType"], "JSONPatch");
    }
    answer
}

fn apply(object: &Value, patch: &Value) -> Value {
    let patch: json_patch::Patch = serde_json::from_value(patch.clone()).unwrap();
    let mut out = object.clone();
    json_patch::patch(&mut out, &patch).unwrap();
    out
}

/// Fixture directories and the webhook path their requests arrive on.
const ROUTES: [(&str, &str); 3] = [
    ("reviews", "/mutate"),
    ("workloads", "/validate-workloads"),
    ("pod-identity", "/validate-pod-identity"),
];

#[tokio::test]
async fn facts_mode_warns_when_the_spc_a_pod_needs_is_not_among_the_facts() {
    let reviewer = Reviewer::new(Arc::new(fixture_facts()), settings(), Limits::default());
    let request: Value = serde_json::from_slice(
        &std::fs::read("tests/fixtures/reviews/patch-workload-identity.json").unwrap(),
    )
    .unwrap();
    let response = support::webhook::admit(&reviewer, "/mutate", &request).await;
    assert_eq!(response["allowed"], true);
    let warnings = response["warnings"].as_array().unwrap();
    assert!(
        warnings.iter().any(|w| {
            let w = w.as_str().unwrap();
            w.starts_with("kvinject: SecretProviderClass kvinject-")
                && w.ends_with("apply the output of `kvinject inject`")
        }),
        "{warnings:?}"
    );
}

#[tokio::test]
async fn every_fixture_answers_as_its_name_says() {
    for (dir, path) in ROUTES {
        for file in fixtures(dir) {
            let name = file.file_stem().unwrap().to_str().unwrap().to_owned();
            let request: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
            let answer = review_at(path, &request).await;
            let response = &answer["response"];
            check_fixture_answer(path, &name, &request, response).await;
            let snapshot = if dir == "reviews" {
                name.clone()
            } else {
                format!("{dir}-{name}")
            };
            insta::assert_json_snapshot!(snapshot, response);
        }
    }
}

async fn check_fixture_answer(path: &str, name: &str, request: &Value, response: &Value) {
    match name.split('-').next().unwrap() {
        "patch" => {
            assert_eq!(path, "/mutate", "{name}: only /mutate patches");
            assert_eq!(response["allowed"], true, "{name}");
            let ops = response["patch"].as_array().expect(name);
            assert!(!ops.is_empty(), "{name}");
            assert!(
                ops.iter().all(|op| op["op"] == "add"),
                "{name}: only add, never remove"
            );
            // Reinvocation sends kvinject its own output: nothing more to do.
            let patched = apply(&request["request"]["object"], &response["patch"]);
            let mut again = request.clone();
            again["request"]["object"] = patched;
            let second = review(&again).await;
            assert_eq!(second["response"]["allowed"], true, "{name}");
            assert!(
                second["response"].get("patch").is_none(),
                "{name}: second pass patched {}",
                second["response"]
            );
        }
        "allow" | "warn" => {
            assert_eq!(response["allowed"], true, "{name}");
            assert!(
                response.get("patch").is_none() && response.get("patchType").is_none(),
                "{name}"
            );
            let warned = response.get("warnings").is_some();
            if path != "/mutate" {
                assert_eq!(warned, name.starts_with("warn"), "{name}: {response}");
            }
        }
        "deny" => {
            assert_eq!(response["allowed"], false, "{name}");
            assert_eq!(response["status"]["code"], 403, "{name}");
            assert_eq!(response["status"]["status"], "Failure", "{name}");
            let message = response["status"]["message"].as_str().unwrap();
            assert!(message.starts_with("kvinject: "), "{name}: {message}");
            assert!(response.get("patch").is_none(), "{name}");
        }
        other => panic!("fixture {name}: unknown prefix {other}"),
    }
}

#[tokio::test]
async fn deny_messages_name_the_annotation_and_the_fix() {
    let cases = [
        (
            "deny-env-conflict",
            "annotation kvinject.io/env.LOG_LEVEL: container app already defines env var LOG_LEVEL",
        ),
        (
            "deny-bad-reference",
            "annotation kvinject.io/env.DB_PASSWORD: reference",
        ),
        (
            "deny-no-identity",
            "has no Azure identity: annotate its ServiceAccount default",
        ),
        (
            "deny-stolen-client-id",
            "a pod cannot name a client ID its ServiceAccount does not carry",
        ),
        ("deny-both-identities", "two Azure identities"),
    ];
    for (fixture, expected) in cases {
        let request: Value = serde_json::from_slice(
            &std::fs::read(format!("tests/fixtures/reviews/{fixture}.json")).unwrap(),
        )
        .unwrap();
        let answer = review(&request).await;
        let message = answer["response"]["status"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{fixture}: {message}");
    }
}

#[tokio::test]
async fn dry_run_gets_the_same_answer() {
    let read = |name: &str| -> Value {
        serde_json::from_slice(
            &std::fs::read(format!("tests/fixtures/reviews/{name}.json")).unwrap(),
        )
        .unwrap()
    };
    let wet = review(&read("patch-workload-identity")).await;
    let dry = review(&read("patch-dry-run")).await;
    for field in ["allowed", "patch", "patchType", "warnings"] {
        assert_eq!(wet["response"][field], dry["response"][field], "{field}");
    }
}

#[tokio::test]
async fn controller_made_pods_use_the_request_namespace() {
    let request: Value = serde_json::from_slice(
        &std::fs::read("tests/fixtures/reviews/patch-workload-identity.json").unwrap(),
    )
    .unwrap();
    assert!(
        request["request"]["object"]["metadata"]
            .get("namespace")
            .is_none()
    );
    assert!(
        request["request"]["object"]["metadata"]
            .get("name")
            .is_none()
    );
    let answer = review(&request).await;
    // The vault comes from namespace shop's annotation: only found through request.namespace.
    assert_eq!(
        answer["response"]["allowed"], true,
        "{}",
        answer["response"]
    );
}

#[tokio::test]
async fn invalid_bodies_get_400_with_a_reason() {
    let expected = [
        ("array", "not a JSON object"),
        ("deep-nesting", "invalid type: sequence"),
        ("empty-uid", "empty uid"),
        ("empty", "body is not JSON"),
        ("invalid-utf8-unread", "invalid UTF-8"),
        ("invalid-utf8", "body is not JSON"),
        ("no-request", "has no request"),
        ("no-uid", "missing field `uid`"),
        ("not-a-review", "kind is \"Pod\", not AdmissionReview"),
        ("not-json", "body is not JSON"),
        ("truncated", "body is not JSON"),
        (
            "v1beta1",
            "apiVersion \"admission.k8s.io/v1beta1\" is not supported",
        ),
    ];
    let paths = fixtures("invalid");
    assert_eq!(paths.len(), expected.len());
    for (path, (name, reason)) in paths.iter().zip(expected) {
        assert_eq!(path.file_stem().unwrap(), name);
        let (status, _, body) = send(post(std::fs::read(path).unwrap())).await;
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {body}");
        assert!(
            body.starts_with("kvinject: ") && body.contains(reason),
            "{name}: {body}"
        );
    }
}

#[tokio::test]
async fn wrong_method_and_content_type() {
    for method in [Method::GET, Method::PUT, Method::DELETE] {
        let (status, _, _) = send(
            Request::builder()
                .method(method.clone())
                .uri("/mutate")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
    }
    for content_type in [Some("text/plain"), Some("application/yaml"), None] {
        let mut request = Request::post("/mutate");
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let (status, headers, body) = send(request.body(Body::from("{}")).unwrap()).await;
        assert_eq!(
            status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
        assert_eq!(headers[header::CONNECTION], "close");
        assert!(String::from_utf8_lossy(&body).contains("Content-Type must be application/json"));
    }
    let request = Request::post("/mutate")
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body(Body::from(
            std::fs::read("tests/fixtures/reviews/allow-update.json").unwrap(),
        ))
        .unwrap();
    assert_eq!(
        send(request).await.0,
        StatusCode::OK,
        "charset parameter accepted"
    );
    let (status, _, _) = send(Request::get("/elsewhere").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    // Declared too large: refused before reading.
    let request = Request::post("/mutate")
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::CONTENT_LENGTH,
            (http::MAX_BODY_BYTES + 1).to_string(),
        )
        .body(Body::from("{}"))
        .unwrap();
    let (status, headers, _) = send(request).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(headers[header::CONNECTION], "close");
    // Streamed with no length: cut off at the limit.
    let chunks = (0..9).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024 * 1024]));
    let request = Request::post("/mutate")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .unwrap();
    assert_eq!(send(request).await.0, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn warnings_reach_the_user() {
    let request: Value = serde_json::from_slice(
        &std::fs::read("tests/fixtures/reviews/patch-aad-pod-identity.json").unwrap(),
    )
    .unwrap();
    let answer = review(&request).await;
    let warnings = answer["response"]["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("deprecated")),
        "{warnings:?}"
    );
}

#[tokio::test]
async fn a_hundred_container_pod_gets_a_valid_patch() {
    let mut request: Value = serde_json::from_slice(
        &std::fs::read("tests/fixtures/reviews/patch-workload-identity.json").unwrap(),
    )
    .unwrap();
    let template = request["request"]["object"]["spec"]["containers"][0].clone();
    let containers: Vec<Value> = (0..100)
        .map(|i| {
            let mut container = template.clone();
            container["name"] = Value::from(format!("c{i}"));
            container
        })
        .collect();
    request["request"]["object"]["spec"]["containers"] = Value::from(containers);
    let answer = review(&request).await;
    let response = &answer["response"];
    assert_eq!(response["allowed"], true, "{response}");
    let patched = apply(&request["request"]["object"], &response["patch"]);
    for container in patched["spec"]["containers"].as_array().unwrap() {
        assert!(
            container["env"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["name"] == "DB_PASSWORD")
        );
        assert!(
            container["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["name"] == "kvinject-secrets")
        );
    }
    let mut again = request.clone();
    again["request"]["object"] = patched;
    assert!(review(&again).await["response"].get("patch").is_none());
}

#[path = "../bench/bodies.rs"]
mod bodies;

/// Adds fields kvinject never reads all over a pod or workload: they must change nothing.
fn with_unread_fields(mut object: Value) -> Value {
    fn scatter(node: &mut Value, depth: usize) {
        match node {
            Value::Object(map) => {
                for value in map.values_mut() {
                    scatter(value, depth + 1);
                }
                map.insert("unreadField".into(), serde_json::json!({"n": [1, 2, 3]}));
            }
            Value::Array(items) if depth < 12 => {
                items.iter_mut().for_each(|v| scatter(v, depth + 1))
            }
            _ => {}
        }
    }
    scatter(&mut object, 0);
    if let Some(annotations) = object.pointer_mut("/metadata/annotations") {
        annotations["example.com/unrelated"] = "x".into();
    }
    object
}

#[test]
fn the_object_read_pruned_gets_the_answer_it_gets_read_whole() {
    use kvinject::webhook::admission::{self, Decoded, Route};
    let facts = fixture_facts();
    let mut bodies: Vec<(String, Route, Vec<u8>)> = Vec::new();
    for (dir, route) in [
        ("reviews", Route::Mutate),
        ("workloads", Route::ValidateWorkloads),
        ("pod-identity", Route::ValidatePodIdentity),
    ] {
        for file in fixtures(dir) {
            let body = std::fs::read(&file).unwrap();
            let mut review: Value = serde_json::from_slice(&body).unwrap();
            let object = review["request"]["object"].take();
            review["request"]["object"] = with_unread_fields(object);
            let name = file.display().to_string();
            bodies.push((
                format!("{name} with unread fields"),
                route,
                review.to_string().into(),
            ));
            bodies.push((name, route, body));
        }
    }
    for case in &bodies::CASES {
        bodies.push((case.name.into(), Route::Mutate, bodies::review_body(case)));
    }
    let mut compared = 0;
    for (name, route, body) in &bodies {
        let pruned = admission::decode(body).unwrap();
        // The fast read and serde_json's give the same request.
        let by_serde = admission::decode_by_serde(body).unwrap();
        assert_eq!(format!("{pruned:?}"), format!("{by_serde:?}"), "{name}");
        // So does the read that writes the object's key, once the object is read.
        let keyed = admission::decode_keyed(body, MAX_ENTRY_BYTES).unwrap();
        assert_eq!(format!("{keyed:?}"), format!("{pruned:?}"), "{name}");
        let review: Value = serde_json::from_slice(body).unwrap();
        let whole = Decoded::new(
            pruned.request.clone(),
            Some(kvinject::core::node::Node::from(
                &review["request"]["object"],
            ))
            .filter(|o| !o.is_null()),
        );
        if let (Some(kept), Some(all)) = (pruned.object(), whole.object()) {
            assert!(
                kept.to_value().to_string().len() <= all.to_value().to_string().len(),
                "{name}"
            );
        }
        let answer = |decoded| admission::answer(*route, decoded, &facts, &settings()).unwrap();
        let (pruned_answer, whole_answer) = (answer(&pruned), answer(&whole));
        assert_eq!(
            String::from_utf8(pruned_answer.encode()).unwrap(),
            String::from_utf8(whole_answer.encode()).unwrap(),
            "{name}"
        );
        assert_eq!(
            pruned_answer.generated_spcs, whole_answer.generated_spcs,
            "{name}"
        );
        compared += 1;
    }
    assert!(compared > 50, "{compared} bodies compared");
}
