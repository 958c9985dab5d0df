#!/usr/bin/env python3
"""Writes the AdmissionReview bodies of the load run: typical.json, large.json, unlabelled.json.

Pods shaped as the API server sends them to a mutating webhook (a ReplicaSet's pod CREATE, with
managedFields, projected token volume, probes, env). The same generator as `benches/core.rs`,
written so that both produce byte-identical compact JSON: the micro-benchmarks and the load run
measure the same inputs.

usage: bench/bodies.py OUT_DIR
"""

import json
import sys

# (name, containers, extra env entries per container, sidecars as full as the app, labelled)
CASES = [
    ("typical", 3, 0, False, True),
    ("large", 50, 4, True, True),
    ("unlabelled", 3, 0, False, False),
]

RS_UID = "2b7e3f5c-1a4d-4e6b-9c8a-7f6e5d4c3b2a"
TOKEN_VOLUME = "kube-api-access-x7k2p"


def container(i, extra_env, full):
    name = "app" if i == 0 else f"sidecar-{i}"
    if not full:
        return {
            "name": name,
            "image": f"registry.example.com/shop/{name}:1.4.{i}",
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
            "volumeMounts": [
                {"name": TOKEN_VOLUME, "readOnly": True, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"},
            ],
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
            "imagePullPolicy": "IfNotPresent",
        }
    env = [
        {"name": "LOG_LEVEL", "value": "info"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
    ]
    env += [{"name": f"FEATURE_{k}", "value": f"enabled-{k}"} for k in range(extra_env)]
    return {
        "name": name,
        "image": f"registry.example.com/shop/{name}:1.4.{i}",
        "args": ["--port", str(8080 + i)],
        "ports": [{"name": "http", "containerPort": 8080 + i, "protocol": "TCP"}],
        "env": env,
        "resources": {"limits": {"memory": "256Mi"}, "requests": {"cpu": "100m", "memory": "128Mi"}},
        "volumeMounts": [
            {"name": "config", "readOnly": True, "mountPath": "/etc/shop"},
            {"name": TOKEN_VOLUME, "readOnly": True, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": 8080 + i, "scheme": "HTTP"},
            "timeoutSeconds": 1,
            "periodSeconds": 10,
            "successThreshold": 1,
            "failureThreshold": 3,
        },
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent",
    }


def container_fields(c):
    """The managedFields (FieldsV1) entry kube-controller-manager writes for one container."""
    if "env" not in c:
        return {".": {}, "f:image": {}, "f:imagePullPolicy": {}, "f:name": {},
                "f:resources": {".": {}, "f:requests": {".": {}, "f:cpu": {}, "f:memory": {}}}}
    env = {".": {}}
    for e in c["env"]:
        env[f'k:{{"name":"{e["name"]}"}}'] = {".": {}, "f:name": {}, ("f:value" if "value" in e else "f:valueFrom"): {}}
    return {
        ".": {},
        "f:args": {},
        "f:env": env,
        "f:image": {},
        "f:imagePullPolicy": {},
        "f:name": {},
        "f:ports": {".": {}, f'k:{{"containerPort":{c["ports"][0]["containerPort"]},"protocol":"TCP"}}': {".": {}, "f:containerPort": {}, "f:name": {}, "f:protocol": {}}},
        "f:readinessProbe": {".": {}, "f:httpGet": {".": {}, "f:path": {}, "f:port": {}, "f:scheme": {}}},
        "f:resources": {".": {}, "f:limits": {".": {}, "f:memory": {}}, "f:requests": {".": {}, "f:cpu": {}, "f:memory": {}}},
        "f:volumeMounts": {".": {}, 'k:{"mountPath":"/etc/shop"}': {".": {}, "f:mountPath": {}, "f:name": {}, "f:readOnly": {}}},
    }


def pod(containers, extra_env, full_sidecars, labelled):
    labels = {"app.kubernetes.io/name": "checkout", "app.kubernetes.io/part-of": "shop", "pod-template-hash": "7d9f8c6b5"}
    annotations = {"prometheus.io/scrape": "true", "prometheus.io/port": "9090"}
    if labelled:
        labels["kvinject.io/inject"] = "true"
        annotations.update({
            "kvinject.io/env.DB_PASSWORD": "db-password",
            "kvinject.io/env.STRIPE_KEY": "stripe-api-key@3f1c0a9e2b7d4e6f8a1b2c3d4e5f6a7b",
            "kvinject.io/file.tls.crt": "cert/checkout-tls?format=pem",
            "kvinject.io/file.config.json": "checkout-config",
        })
    cs = [container(i, extra_env, i == 0 or full_sidecars) for i in range(containers)]
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "generateName": "checkout-7d9f8c6b5-",
            "namespace": "shop",
            "creationTimestamp": None,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "checkout-7d9f8c6b5",
                "uid": RS_UID, "controller": True, "blockOwnerDeletion": True,
            }],
            "managedFields": [{
                "manager": "kube-controller-manager",
                "operation": "Update",
                "apiVersion": "v1",
                "time": "2026-11-28T10:00:00Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {
                    "f:metadata": {
                        "f:annotations": {".": {}, **{f"f:{k}": {} for k in annotations}},
                        "f:generateName": {},
                        "f:labels": {".": {}, **{f"f:{k}": {} for k in labels}},
                        "f:ownerReferences": {".": {}, f'k:{{"uid":"{RS_UID}"}}': {}},
                    },
                    "f:spec": {
                        "f:containers": {f'k:{{"name":"{c["name"]}"}}': container_fields(c) for c in cs},
                        "f:dnsPolicy": {},
                        "f:enableServiceLinks": {},
                        "f:restartPolicy": {},
                        "f:schedulerName": {},
                        "f:securityContext": {},
                        "f:serviceAccountName": {},
                        "f:terminationGracePeriodSeconds": {},
                        "f:volumes": {".": {}, 'k:{"name":"config"}': {".": {}, "f:configMap": {".": {}, "f:defaultMode": {}, "f:name": {}}, "f:name": {}}},
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
            "containers": cs,
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
            "enableServiceLinks": True,
            "preemptionPolicy": "PreemptLowerPriority",
        },
        "status": {},
    }


def review(containers, extra_env, full_sidecars, labelled):
    gvk = {"group": "", "version": "v1", "kind": "Pod"}
    gvr = {"group": "", "version": "v1", "resource": "pods"}
    return {
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
            "object": pod(containers, extra_env, full_sidecars, labelled),
            "oldObject": None,
            "dryRun": False,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        },
    }


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip().splitlines()[-1])
    out = sys.argv[1]
    for name, containers, extra_env, full_sidecars, labelled in CASES:
        body = json.dumps(review(containers, extra_env, full_sidecars, labelled), separators=(",", ":")).encode()
        with open(f"{out}/{name}.json", "wb") as f:
            f.write(body)
        print(f"{name}: {len(body)} bytes, {containers} containers")


if __name__ == "__main__":
    main()
