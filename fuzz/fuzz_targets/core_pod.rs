//! Structured pods through the pure core. Properties, for every pod: `plan_pod` never panics; an
//! `Inject` plan's patch text is a JSON Patch of `add` operations only, byte for byte what
//! `json-patch` writes for the operations read from it, applies to the pod with that
//! independent RFC 6902 implementation, and planning the patched pod again gives an empty patch.
//!
//! Names and values are drawn mostly from small pools (the containers, env vars, volumes and
//! references kvinject cares about, and the facts of `tests/fixtures/facts.yaml`) so that inputs
//! collide the way real pods do, with arbitrary strings mixed in.
#![no_main]

use std::sync::LazyLock;

use arbitrary::Arbitrary;
use json_patch::PatchOperation;
use kvinject::core::facts::DocumentFacts;
use kvinject::core::plan::{self, Decision, Settings};
use kvinject::offline::manifest::{self, Format};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};

static FACTS: LazyLock<DocumentFacts> = LazyLock::new(|| {
    let yaml = include_bytes!("../../tests/fixtures/facts.yaml");
    let documents = manifest::parse(yaml, Format::Yaml, "facts.yaml").expect("the fixture parses");
    DocumentFacts::from_documents(&documents, "default")
});

/// A string from a pool, or any string.
#[derive(Arbitrary, Debug)]
enum Pick<const N: usize> {
    Pool(u8),
    Any(String),
}

impl<const N: usize> Pick<N> {
    fn get(&self, pool: &[&str; N]) -> String {
        match self {
            Self::Pool(i) => pool[usize::from(*i) % N].to_owned(),
            Self::Any(s) => s.clone(),
        }
    }
}

const NAMESPACES: [&str; 5] = ["shop", "other", "kube-system", "kvinject", ""];
const SERVICE_ACCOUNTS: [&str; 4] = ["checkout", "default", "payments", "missing"];
const SELECTORS: [&str; 3] = ["legacy", "payments", "unknown"];
const CONTAINERS: [&str; 5] = ["app", "sidecar", "init", "proxy", ""];
const VARS: [&str; 6] = [
    "DB_PASSWORD",
    "API_KEY",
    "TLS_CERT",
    "LOG_LEVEL",
    "db-password",
    "",
];
const FILES: [&str; 6] = [
    "tls.crt",
    "db-password",
    "config.json",
    "API_KEY",
    "a/b",
    "shop-tls.pem",
];
const TLS_SECRETS: [&str; 4] = ["shop-tls", "kvinject-x", "Shop_TLS", "tls.crt"];
const REFERENCES: [&str; 10] = [
    "db-password",
    "datadog-api-key?vault=platform-kv",
    "cert/internal-ca?vault=Shop-Prod-KV&mode=0400",
    "cert/checkout-tls?format=pem",
    "stripe-api-key@3f1c0a9e2b7d4e6f8a1b2c3d4e5f6a7b",
    "key/signing?encoding=base64",
    "secret/db-password?mode=0400",
    "checkout-hand/password",
    "password",
    "",
];
const VOLUMES: [&str; 5] = [
    "kvinject-secrets",
    "kvinject-secrets-platform-kv",
    "config",
    "kube-api-access-x7k2p",
    "data",
];
const MOUNT_PATHS: [&str; 7] = [
    "/mnt/secrets-store",
    "/etc/secrets",
    "/mnt/secrets-store/",
    "relative",
    "/",
    "/mnt/secrets-store-platform-kv",
    "/mnt/secrets-store/.",
];
const SPC_NAMES: [&str; 4] = ["checkout-hand", "kvinject-x", "missing", "Bad_Name"];
const CLIENT_IDS: [&str; 3] = [
    "5e2c6f4a-9d1b-4c3e-8a7f-0b1c2d3e4f50",
    "00000000-0000-0000-0000-000000000000",
    "not-a-guid",
];
const VAULTS: [&str; 3] = ["shop-prod-kv", "other-kv", "bad vault"];
const TENANTS: [&str; 2] = ["72f988bf-86f1-41af-91ab-2d7cd011db47", "tenant"];

#[derive(Arbitrary, Debug)]
enum Annotation {
    Env(Pick<6>, Pick<10>),
    File(Pick<6>, Pick<10>),
    TlsSecret(Pick<4>, Pick<10>),
    Vault(Pick<3>),
    TenantId(Pick<2>),
    MountPath(Pick<7>),
    Containers(Vec<Pick<5>>),
    ClientId(Pick<3>),
    SecretProviderClass(Pick<4>),
    Injected(Pick<4>),
    Inject(Pick<3>),
    MirrorPod,
    Other(String, String),
    /// A kvinject key whose value is not a string.
    NotAString(Pick<6>),
}

#[derive(Arbitrary, Debug)]
enum EnvSource {
    Value(String),
    SecretKeyRef(Pick<4>, Pick<6>),
    FieldRef,
}

#[derive(Arbitrary, Debug)]
struct EnvVar {
    name: Pick<6>,
    source: EnvSource,
}

#[derive(Arbitrary, Debug)]
struct Mount {
    name: Pick<5>,
    path: Pick<7>,
    read_only: Option<bool>,
}

/// How a container list or field is written: absent, of the wrong JSON type, or as given.
#[derive(Arbitrary, Debug)]
enum Shape<T> {
    Absent,
    WrongType,
    Present(T),
}

#[derive(Arbitrary, Debug)]
struct Container {
    name: Pick<5>,
    env: Shape<Vec<EnvVar>>,
    mounts: Shape<Vec<Mount>>,
    sidecar: bool,
}

#[derive(Arbitrary, Debug)]
enum Volume {
    Csi {
        name: Pick<5>,
        spc: Pick<4>,
        driver_ok: bool,
    },
    EmptyDir(Pick<5>),
    NotAnObject,
}

#[derive(Arbitrary, Debug)]
struct Input {
    namespace: Pick<5>,
    inject_label: Option<Pick<3>>,
    aadpodidbinding: Option<Pick<3>>,
    service_account: Option<Pick<4>>,
    annotations: Vec<Annotation>,
    containers: Shape<Vec<Container>>,
    init_containers: Shape<Vec<Container>>,
    volumes: Shape<Vec<Volume>>,
    default_vault: Option<Pick<3>>,
    default_tenant: Option<Pick<2>>,
}

fn shaped<T>(shape: &Shape<Vec<T>>, f: impl Fn(&T) -> Value) -> Option<Value> {
    match shape {
        Shape::Absent => None,
        Shape::WrongType => Some(json!("not a list")),
        Shape::Present(items) => Some(Value::Array(items.iter().map(f).collect())),
    }
}

fn container(c: &Container) -> Value {
    let mut out = Map::new();
    out.insert("name".into(), json!(c.name.get(&CONTAINERS)));
    out.insert("image".into(), json!("registry.example.com/app:1"));
    if let Some(env) = shaped(&c.env, |e| {
        let name = e.name.get(&VARS);
        match &e.source {
            EnvSource::Value(v) => json!({"name": name, "value": v}),
            EnvSource::SecretKeyRef(secret, key) => json!({"name": name, "valueFrom": {
                "secretKeyRef": {"name": secret.get(&SPC_NAMES), "key": key.get(&VARS)}}}),
            EnvSource::FieldRef => json!({"name": name, "valueFrom": {
                "fieldRef": {"fieldPath": "metadata.name"}}}),
        }
    }) {
        out.insert("env".into(), env);
    }
    if let Some(mounts) = shaped(&c.mounts, |m| {
        let mut mount =
            json!({"name": m.name.get(&VOLUMES), "mountPath": m.path.get(&MOUNT_PATHS)});
        if let Some(read_only) = m.read_only {
            mount["readOnly"] = json!(read_only);
        }
        mount
    }) {
        out.insert("volumeMounts".into(), mounts);
    }
    if c.sidecar {
        out.insert("restartPolicy".into(), json!("Always"));
    }
    Value::Object(out)
}

fn pod(input: &Input) -> Value {
    let mut labels = Map::new();
    labels.insert("app".into(), json!("checkout"));
    if let Some(value) = &input.inject_label {
        labels.insert(
            "kvinject.io/inject".into(),
            json!(value.get(&["true", "false", "yes"])),
        );
    }
    if let Some(selector) = &input.aadpodidbinding {
        labels.insert("aadpodidbinding".into(), json!(selector.get(&SELECTORS)));
    }
    let mut annotations = Map::new();
    for annotation in &input.annotations {
        let (key, value) = match annotation {
            Annotation::Env(var, reference) => (
                format!("kvinject.io/env.{}", var.get(&VARS)),
                json!(reference.get(&REFERENCES)),
            ),
            Annotation::File(file, reference) => (
                format!("kvinject.io/file.{}", file.get(&FILES)),
                json!(reference.get(&REFERENCES)),
            ),
            Annotation::TlsSecret(secret, reference) => (
                format!("kvinject.io/tls-secret.{}", secret.get(&TLS_SECRETS)),
                json!(reference.get(&REFERENCES)),
            ),
            Annotation::Vault(v) => ("kvinject.io/vault".into(), json!(v.get(&VAULTS))),
            Annotation::TenantId(t) => ("kvinject.io/tenant-id".into(), json!(t.get(&TENANTS))),
            Annotation::MountPath(p) => {
                ("kvinject.io/mount-path".into(), json!(p.get(&MOUNT_PATHS)))
            }
            Annotation::Containers(names) => {
                let names: Vec<String> = names.iter().map(|n| n.get(&CONTAINERS)).collect();
                ("kvinject.io/containers".into(), json!(names.join(",")))
            }
            Annotation::ClientId(c) => ("kvinject.io/client-id".into(), json!(c.get(&CLIENT_IDS))),
            Annotation::SecretProviderClass(s) => (
                "kvinject.io/secret-provider-class".into(),
                json!(s.get(&SPC_NAMES)),
            ),
            Annotation::Injected(s) => ("kvinject.io/injected".into(), json!(s.get(&SPC_NAMES))),
            Annotation::Inject(v) => (
                "kvinject.io/inject".into(),
                json!(v.get(&["true", "false", "yes"])),
            ),
            Annotation::MirrorPod => ("kubernetes.io/config.mirror".into(), json!("hash")),
            Annotation::Other(key, value) => (key.clone(), json!(value)),
            Annotation::NotAString(var) => {
                (format!("kvinject.io/env.{}", var.get(&VARS)), json!(1))
            }
        };
        annotations.insert(key, value);
    }
    let mut spec = Map::new();
    if let Some(sa) = &input.service_account {
        spec.insert(
            "serviceAccountName".into(),
            json!(sa.get(&SERVICE_ACCOUNTS)),
        );
    }
    if let Some(volumes) = shaped(&input.volumes, |v| match v {
        Volume::Csi {
            name,
            spc,
            driver_ok,
        } => json!({"name": name.get(&VOLUMES), "csi": {
            "driver": if *driver_ok { "secrets-store.csi.k8s.io" } else { "other.csi" },
            "readOnly": true,
            "volumeAttributes": {"secretProviderClass": spc.get(&SPC_NAMES)}}}),
        Volume::EmptyDir(name) => json!({"name": name.get(&VOLUMES), "emptyDir": {}}),
        Volume::NotAnObject => json!(7),
    }) {
        spec.insert("volumes".into(), volumes);
    }
    if let Some(containers) = shaped(&input.containers, container) {
        spec.insert("containers".into(), containers);
    }
    if let Some(init) = shaped(&input.init_containers, container) {
        spec.insert("initContainers".into(), init);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "checkout-", "labels": labels, "annotations": annotations},
        "spec": spec,
    })
}

fuzz_target!(|input: Input| {
    let namespace = input.namespace.get(&NAMESPACES);
    let settings = Settings::new(
        input.default_vault.as_ref().map(|v| v.get(&VAULTS)),
        input.default_tenant.as_ref().map(|t| t.get(&TENANTS)),
        "kvinject",
    );
    let pod = pod(&input);
    let Ok(Decision::Inject(plan)) = plan::plan_pod(
        &kvinject::core::node::Node::from(&pod),
        &namespace,
        &*FACTS,
        &settings,
    ) else {
        return;
    };
    if plan.patch.is_empty() {
        return;
    }
    let operations = match plan.patch.operations() {
        Ok(operations) => operations,
        Err(error) => panic!(
            "the patch text is not a JSON Patch: {error}\n{}",
            plan.patch.as_str()
        ),
    };
    assert_eq!(
        serde_json::to_string(&operations).expect("operations serialise"),
        plan.patch.as_str(),
        "the patch text is not what json-patch writes for its operations"
    );
    assert!(
        operations
            .iter()
            .all(|op| matches!(op, PatchOperation::Add(_))),
        "the patch does more than add: {}",
        plan.patch.as_str()
    );
    let mut patched = pod.clone();
    if let Err(error) = json_patch::patch(&mut patched, &operations) {
        panic!(
            "the patch does not apply: {error}\npod: {pod}\npatch: {}",
            plan.patch.as_str()
        );
    }
    match plan::plan_pod(
        &kvinject::core::node::Node::from(&patched),
        &namespace,
        &*FACTS,
        &settings,
    ) {
        Ok(Decision::Inject(again)) if again.patch.is_empty() => {}
        other => panic!(
            "planning the patched pod again is not an empty patch: {other:?}\npod: {pod}\npatched: {patched}"
        ),
    }
});
