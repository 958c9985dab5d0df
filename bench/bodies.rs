//! The AdmissionReview bodies every benchmark measures, made in one place: the criterion
//! benchmarks (`benches/core.rs`) include this file, and the load run (`bench/load`) writes the
//! same bodies with `cargo run --example bench-bodies -- DIR`.
//!
//! Three pods as the API server sends them to a mutating webhook (a ReplicaSet's pod CREATE, with
//! managedFields, projected token volume, probes, env): `typical` (3 containers, 4 kvinject
//! annotations), `large` (50 containers) and `unlabelled` (not opted in). They run under the
//! Namespace and ServiceAccount of `tests/fixtures/facts.yaml`.
#![allow(dead_code)]

use serde_json::{Map, Value, json};

const RS_UID: &str = "2b7e3f5c-1a4d-4e6b-9c8a-7f6e5d4c3b2a";
const TOKEN_VOLUME: &str = "kube-api-access-x7k2p";

/// One benchmarked AdmissionReview.
pub struct Case {
    /// The file name (without `.json`) and benchmark id.
    pub name: &'static str,
    /// Containers in the pod.
    pub containers: usize,
    /// Extra env entries per container.
    pub extra_env: usize,
    /// Sidecars as full as the app container.
    pub full_sidecars: bool,
    /// Carries `kvinject.io/inject: "true"`.
    pub labelled: bool,
}

/// The benchmarked shapes.
pub const CASES: [Case; 3] = [
    Case {
        name: "typical",
        containers: 3,
        extra_env: 0,
        full_sidecars: false,
        labelled: true,
    },
    Case {
        name: "large",
        containers: 50,
        extra_env: 4,
        full_sidecars: true,
        labelled: true,
    },
    Case {
        name: "unlabelled",
        containers: 3,
        extra_env: 0,
        full_sidecars: false,
        labelled: false,
    },
];

fn container(i: usize, extra_env: usize, full: bool) -> Value {
    let name = if i == 0 {
        "app".to_owned()
    } else {
        format!("sidecar-{i}")
    };
    let image = format!("registry.example.com/shop/{name}:1.4.{i}");
    let token_mount = json!({
        "name": TOKEN_VOLUME, "readOnly": true,
        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
    });
    if !full {
        return json!({
            "name": name,
            "image": image,
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
            "volumeMounts": [token_mount],
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
            "imagePullPolicy": "IfNotPresent",
        });
    }
    let port = 8080 + i;
    let mut env = vec![
        json!({"name": "LOG_LEVEL", "value": "info"}),
        json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}}),
    ];
    env.extend(
        (0..extra_env)
            .map(|k| json!({"name": format!("FEATURE_{k}"), "value": format!("enabled-{k}")})),
    );
    json!({
        "name": name,
        "image": image,
        "args": ["--port", port.to_string()],
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "env": env,
        "resources": {"limits": {"memory": "256Mi"}, "requests": {"cpu": "100m", "memory": "128Mi"}},
        "volumeMounts": [
            {"name": "config", "readOnly": true, "mountPath": "/etc/shop"},
            token_mount,
        ],
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": port, "scheme": "HTTP"},
            "timeoutSeconds": 1,
            "periodSeconds": 10,
            "successThreshold": 1,
            "failureThreshold": 3,
        },
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent",
    })
}

/// The managedFields (FieldsV1) entry kube-controller-manager writes for one container.
fn container_fields(c: &Value) -> Value {
    let Some(env) = c["env"].as_array() else {
        return json!({
            ".": {}, "f:image": {}, "f:imagePullPolicy": {}, "f:name": {},
            "f:resources": {".": {}, "f:requests": {".": {}, "f:cpu": {}, "f:memory": {}}},
        });
    };
    let mut env_fields = Map::new();
    env_fields.insert(".".into(), json!({}));
    for e in env {
        let value = if e.get("value").is_some() {
            "f:value"
        } else {
            "f:valueFrom"
        };
        let key = format!(
            "k:{{\"name\":\"{}\"}}",
            e["name"].as_str().unwrap_or_default()
        );
        env_fields.insert(key, json!({".": {}, "f:name": {}, value: {}}));
    }
    let port = format!(
        "k:{{\"containerPort\":{},\"protocol\":\"TCP\"}}",
        c["ports"][0]["containerPort"]
    );
    json!({
        ".": {},
        "f:args": {},
        "f:env": env_fields,
        "f:image": {},
        "f:imagePullPolicy": {},
        "f:name": {},
        "f:ports": {".": {}, port: {".": {}, "f:containerPort": {}, "f:name": {}, "f:protocol": {}}},
        "f:readinessProbe": {".": {}, "f:httpGet": {".": {}, "f:path": {}, "f:port": {}, "f:scheme": {}}},
        "f:resources": {".": {}, "f:limits": {".": {}, "f:memory": {}}, "f:requests": {".": {}, "f:cpu": {}, "f:memory": {}}},
        "f:volumeMounts": {".": {}, "k:{\"mountPath\":\"/etc/shop\"}": {".": {}, "f:mountPath": {}, "f:name": {}, "f:readOnly": {}}},
    })
}

/// `{".": {}, "f:<key>": {}, ...}` for the keys of a map.
fn key_fields(map: &Map<String, Value>) -> Value {
    let mut fields = Map::new();
    fields.insert(".".into(), json!({}));
    for key in map.keys() {
        fields.insert(format!("f:{key}"), json!({}));
    }
    Value::Object(fields)
}

fn pod(case: &Case) -> Value {
    let mut labels = json!({
        "app.kubernetes.io/name": "checkout",
        "app.kubernetes.io/part-of": "shop",
        "pod-template-hash": "7d9f8c6b5",
    });
    let mut annotations = json!({"prometheus.io/scrape": "true", "prometheus.io/port": "9090"});
    if case.labelled {
        labels["kvinject.io/inject"] = json!("true");
        for (key, value) in [
            ("kvinject.io/env.DB_PASSWORD", "db-password"),
            (
                "kvinject.io/env.STRIPE_KEY",
                "stripe-api-key@3f1c0a9e2b7d4e6f8a1b2c3d4e5f6a7b",
            ),
            ("kvinject.io/file.tls.crt", "cert/checkout-tls?format=pem"),
            ("kvinject.io/file.config.json", "checkout-config"),
        ] {
            annotations[key] = json!(value);
        }
    }
    let containers: Vec<Value> = (0..case.containers)
        .map(|i| container(i, case.extra_env, i == 0 || case.full_sidecars))
        .collect();
    let container_fields: Map<String, Value> = containers
        .iter()
        .map(|c| {
            let key = format!(
                "k:{{\"name\":\"{}\"}}",
                c["name"].as_str().unwrap_or_default()
            );
            (key, container_fields(c))
        })
        .collect();
    let owner_key = format!("k:{{\"uid\":\"{RS_UID}\"}}");
    json!({
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "generateName": "checkout-7d9f8c6b5-",
            "namespace": "shop",
            "creationTimestamp": null,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "checkout-7d9f8c6b5",
                "uid": RS_UID, "controller": true, "blockOwnerDeletion": true,
            }],
            "managedFields": [{
                "manager": "kube-controller-manager",
                "operation": "Update",
                "apiVersion": "v1",
                "time": "2026-11-28T10:00:00Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {
                    "f:metadata": {
                        "f:annotations": key_fields(annotations.as_object().expect("an object")),
                        "f:generateName": {},
                        "f:labels": key_fields(labels.as_object().expect("an object")),
                        "f:ownerReferences": {".": {}, owner_key: {}},
                    },
                    "f:spec": {
                        "f:containers": container_fields,
                        "f:dnsPolicy": {},
                        "f:enableServiceLinks": {},
                        "f:restartPolicy": {},
                        "f:schedulerName": {},
                        "f:securityContext": {},
                        "f:serviceAccountName": {},
                        "f:terminationGracePeriodSeconds": {},
                        "f:volumes": {".": {}, "k:{\"name\":\"config\"}": {".": {}, "f:configMap": {".": {}, "f:defaultMode": {}, "f:name": {}}, "f:name": {}}},
                    },
                },
            }],
        },
        "spec": {
            "volumes": [
                {"name": "config", "configMap": {"name": "checkout-config", "defaultMode": 420}},
                {"name": TOKEN_VOLUME, "projected": {"sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
                ], "defaultMode": 420}},
            ],
            "containers": containers,
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "checkout",
            "serviceAccount": "checkout",
            "securityContext": {},
            "schedulerName": "default-scheduler",
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            ],
            "priority": 0,
            "enableServiceLinks": true,
            "preemptionPolicy": "PreemptLowerPriority",
        },
        "status": {},
    })
}

/// The AdmissionReview of `case`, compact JSON as the API server sends it.
pub fn review_body(case: &Case) -> Vec<u8> {
    let gvk = json!({"group": "", "version": "v1", "kind": "Pod"});
    let gvr = json!({"group": "", "version": "v1", "resource": "pods"});
    let review = json!({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": "b8f7a1d2-ab0a-592a-afd0-6ef76d774844",
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": "8e3c2a1b-0f9e-4d8c-b7a6-5e4d3c2b1a0f",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"],
            },
            "object": pod(case),
            "oldObject": null,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        },
    });
    serde_json::to_vec(&review).expect("JSON values serialise")
}
