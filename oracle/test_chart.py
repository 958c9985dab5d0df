"""The Helm chart as the API server would see it: which pods reach which webhook, with which
failure policy, and what kvinject's own pods and RBAC allow.

Reads rendered charts only; needs no cluster and no running kvinject. scripts/check-packaging
renders every value set into a directory and names it in KVINJECT_RENDERED. Without it (as part
of the oracle suite) the committed manifests/ are checked, and the value sets only
check-packaging renders are skipped.
"""

import base64
import os
import pathlib
import re

import kubernetes_validate
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
KUBERNETES_VERSION = "1.34.0"
RELEASE = "kvinject"
NAMESPACE = "kvinject"
FULLNAME = "kvinject"
CHART = ROOT / "charts" / "kvinject"
TLS_SECRET = "kvinject-tls"

# Value set -> what scripts/check-packaging sets (see scripts/packaging/write_value_sets.py).
VALUE_SETS = [
    "defaults", "cert-manager", "cert-manager-issuer", "provided", "single-replica", "hardened", "monitoring",
    "operations", "rotation-restarts", "uninjected-eviction", "denial-events", "plan-cache-off",
]
COMMITTED = {"defaults": "kvinject.yaml", "cert-manager": "kvinject-cert-manager.yaml"}
CERT_MODE = {
    "defaults": "selfManaged",
    "cert-manager": "certManager",
    "cert-manager-issuer": "certManager",
    "provided": "provided",
    "single-replica": "selfManaged",
    "hardened": "selfManaged",
    "monitoring": "selfManaged",
    "operations": "selfManaged",
    "rotation-restarts": "selfManaged",
    "uninjected-eviction": "selfManaged",
    "denial-events": "selfManaged",
    "plan-cache-off": "selfManaged",
}
# Value set -> the optional features it turns on (all are off in the others). "uninjected" is the
# check, "evict" the eviction that implies it.
FEATURES = {
    "operations": {"rotation", "uninjected", "evict", "denial"},
    "rotation-restarts": {"rotation"},
    "uninjected-eviction": {"uninjected", "evict"},
    "denial-events": {"denial"},
}


def rendered_path(value_set):
    directory = os.environ.get("KVINJECT_RENDERED")
    if directory:
        return pathlib.Path(directory) / f"{value_set}.yaml"
    if value_set in COMMITTED:
        return ROOT / "manifests" / COMMITTED[value_set]
    return None


_CACHE = {}


def documents(value_set):
    if value_set not in _CACHE:
        path = rendered_path(value_set)
        if path is None:
            pytest.skip(f"{value_set} is rendered by scripts/check-packaging only")
        assert path.is_file(), f"{path} is missing"
        _CACHE[value_set] = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return _CACHE[value_set]


def objects(value_set, kind):
    return [doc for doc in documents(value_set) if doc["kind"] == kind]


def one(value_set, kind, name=FULLNAME):
    found = [doc for doc in objects(value_set, kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"{value_set}: expected one {kind} {name}, found {len(found)}"
    return found[0]


def webhook(value_set, kind, name):
    found = [hook for hook in one(value_set, kind)["webhooks"] if hook["name"] == name]
    assert len(found) == 1, f"{value_set}: expected one webhook {name} in the {kind}"
    return found[0]


def container(value_set):
    containers = one(value_set, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["kvinject"]
    return containers[0]


every_set = pytest.mark.parametrize("value_set", VALUE_SETS)


# --- A label selector, evaluated as the API server evaluates metav1.LabelSelector -------------


def selector_matches(selector, labels):
    """True when `labels` match `selector`. An absent or empty selector matches everything, as
    for a webhook's namespaceSelector and objectSelector."""
    if not selector:
        return True
    unknown = set(selector) - {"matchLabels", "matchExpressions"}
    assert not unknown, f"not a label selector: {unknown}"
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        if operator == "In":
            assert values, "In needs values"
            if key not in labels or labels[key] not in values:
                return False
        elif operator == "NotIn":
            assert values, "NotIn needs values"
            if key in labels and labels[key] in values:
                return False
        elif operator == "Exists":
            assert not values, "Exists takes no values"
            if key not in labels:
                return False
        elif operator == "DoesNotExist":
            assert not values, "DoesNotExist takes no values"
            if key in labels:
                return False
        else:
            raise AssertionError(f"unknown operator {operator}")
    return True


@pytest.mark.parametrize(
    "selector, labels, expected",
    [
        (None, {}, True),
        ({}, {"a": "1"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
        ({"matchLabels": {"a": "1"}}, {}, False),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]}, {"a": "2"}, True),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1"]}]}, {}, False),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {}, True),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {"a": "1"}, False),
        ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"a": ""}, True),
        ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"b": "1"}, False),
        ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"b": "1"}, True),
        ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": "1"}, False),
        (
            {"matchLabels": {"a": "1"}, "matchExpressions": [{"key": "b", "operator": "Exists"}]},
            {"a": "1"},
            False,
        ),
    ],
)
def test_the_selector_evaluator_follows_kubernetes(selector, labels, expected):
    assert selector_matches(selector, labels) is expected


def namespace_labels(name, opted_in=True):
    """A namespace's labels as the API server sees them: it sets kubernetes.io/metadata.name."""
    labels = {"kubernetes.io/metadata.name": name}
    if opted_in:
        labels["kvinject.io/injection"] = "enabled"
    return labels


def reaches(hook, namespace, object_labels):
    return selector_matches(hook.get("namespaceSelector"), namespace) and selector_matches(
        hook.get("objectSelector"), object_labels
    )


# --- Every object is valid ---------------------------------------------------------------------

GO_DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")
CERTIFICATE_SPEC_FIELDS = {
    "additionalOutputFormats", "commonName", "dnsNames", "duration", "emailAddresses",
    "encodeUsagesInRequest", "ipAddresses", "isCA", "issuerRef", "keystores", "literalSubject",
    "nameConstraints", "otherNames", "privateKey", "renewBefore", "renewBeforePercentage",
    "revisionHistoryLimit", "secretName", "secretTemplate", "signatureAlgorithm", "subject",
    "uris", "usages",
}
KEY_USAGES = {
    "signing", "digital signature", "content commitment", "key encipherment", "key agreement",
    "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any",
    "server auth", "client auth", "code signing", "email protection", "s/mime", "ipsec end system",
    "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc",
}
ISSUER_TYPES = {"acme", "ca", "selfSigned", "vault", "venafi"}


def seconds(duration):
    units = {"h": 3600, "m": 60, "s": 1}
    return sum(int(n) * units[u] for n, u in re.findall(r"([0-9]+)([hms])", duration))


def check_cert_manager(document):
    """cert-manager.io/v1 has no schema in kubernetes-validate: its required fields and enums,
    checked by hand from the CRDs' definitions."""
    assert document["apiVersion"] == "cert-manager.io/v1"
    metadata, spec = document["metadata"], document["spec"]
    assert metadata["name"] and metadata["namespace"] == NAMESPACE
    if document["kind"] == "Issuer":
        assert len(set(spec) & ISSUER_TYPES) == 1 and set(spec) <= ISSUER_TYPES, spec
        if "ca" in spec:
            assert spec["ca"]["secretName"]
        if "selfSigned" in spec:
            assert spec["selfSigned"] == {} or set(spec["selfSigned"]) <= {"crlDistributionPoints"}
        return
    assert document["kind"] == "Certificate", document["kind"]
    assert set(spec) <= CERTIFICATE_SPEC_FIELDS, set(spec) - CERTIFICATE_SPEC_FIELDS
    assert spec["secretName"], "spec.secretName is required"
    issuer = spec["issuerRef"]
    assert issuer["name"], "spec.issuerRef.name is required"
    assert set(issuer) <= {"name", "kind", "group"}
    assert spec.get("commonName") or spec.get("dnsNames") or spec.get("uris"), "a subject is needed"
    for field in ("duration", "renewBefore"):
        if field in spec:
            assert GO_DURATION.match(spec[field]), f"{field}: {spec[field]!r} is no Go duration"
    if "duration" in spec and "renewBefore" in spec:
        assert seconds(spec["renewBefore"]) < seconds(spec["duration"])
    assert set(spec.get("usages", [])) <= KEY_USAGES
    key = spec.get("privateKey", {})
    assert set(key) <= {"algorithm", "encoding", "rotationPolicy", "size"}
    assert key.get("algorithm", "RSA") in ("RSA", "ECDSA", "Ed25519")
    if key.get("algorithm") == "ECDSA":
        assert key.get("size", 256) in (256, 384, 521)
    assert key.get("encoding", "PKCS1") in ("PKCS1", "PKCS8")
    assert key.get("rotationPolicy", "Always") in ("Never", "Always")
    assert isinstance(spec.get("isCA", False), bool)


# The fields kvinject's chart sets, as the Prometheus Operator's CRDs (monitoring.coreos.com/v1)
# define them: anything else would be refused by the API server's strict field validation.
SERVICE_MONITOR_SPEC = {"selector", "namespaceSelector", "endpoints", "jobLabel"}
ENDPOINT_FIELDS = {"port", "path", "interval", "scheme", "scrapeTimeout"}
RULE_FIELDS = {"alert", "record", "expr", "for", "labels", "annotations"}


def check_prometheus_operator(document):
    spec = document["spec"]
    if document["kind"] == "ServiceMonitor":
        assert set(spec) <= SERVICE_MONITOR_SPEC, set(spec) - SERVICE_MONITOR_SPEC
        assert spec["selector"]["matchLabels"], "a ServiceMonitor without a selector scrapes every Service"
        for endpoint in spec["endpoints"]:
            assert set(endpoint) <= ENDPOINT_FIELDS, endpoint
            assert GO_DURATION.match(endpoint["interval"]), endpoint["interval"]
        return
    assert document["kind"] == "PrometheusRule", document["kind"]
    assert set(spec) == {"groups"}
    for group in spec["groups"]:
        assert set(group) <= {"name", "rules", "interval"} and group["name"]
        for rule in group["rules"]:
            assert set(rule) <= RULE_FIELDS, rule
            assert ("alert" in rule) != ("record" in rule) and rule["expr"], rule
            if "for" in rule:
                assert GO_DURATION.match(rule["for"]), rule["for"]
            assert all(isinstance(v, str) for v in rule.get("labels", {}).values())
            assert all(isinstance(v, str) for v in rule.get("annotations", {}).values())


@every_set
def test_every_object_is_valid_for_kubernetes(value_set):
    kinds = set()
    for document in documents(value_set):
        kinds.add(document["kind"])
        if document["apiVersion"].startswith("cert-manager.io/"):
            check_cert_manager(document)
            continue
        if document["apiVersion"] == "monitoring.coreos.com/v1":
            check_prometheus_operator(document)
            continue
        try:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = "/".join(str(part) for part in error.path)
            pytest.fail(f"{document['kind']} {document['metadata']['name']} at {where}: {error.message}")
    assert {"Deployment", "Service", "ServiceAccount", "MutatingWebhookConfiguration"} <= kinds


@every_set
def test_namespaced_objects_live_in_the_release_namespace(value_set):
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"}
    for document in documents(value_set):
        if document["kind"] in cluster_scoped:
            assert "namespace" not in document["metadata"]
        else:
            assert document["metadata"]["namespace"] == NAMESPACE, document["kind"]


# --- Which pods reach the mutating webhook ----------------------------------------------------

LABELLED = {"app": "checkout", "kvinject.io/inject": "true"}


@every_set
def test_only_labelled_pods_in_opted_in_namespaces_reach_the_mutating_webhook(value_set):
    hook = webhook(value_set, "MutatingWebhookConfiguration", "pods.kvinject.io")
    shop = namespace_labels("shop")
    assert reaches(hook, shop, LABELLED)
    assert not reaches(hook, shop, {"app": "checkout"}), "an unlabelled pod must never be sent"
    assert not reaches(hook, shop, {"kvinject.io/inject": "false"})
    assert not reaches(hook, shop, {"kvinject.io/inject": "True"}), "label values are exact"
    assert not reaches(hook, namespace_labels("shop", opted_in=False), LABELLED)


@every_set
@pytest.mark.parametrize("name", ["kube-system", "kube-node-lease", NAMESPACE])
def test_system_and_own_namespaces_are_excluded_even_when_labelled(value_set, name):
    for kind, names in [
        ("MutatingWebhookConfiguration", ["pods.kvinject.io"]),
        ("ValidatingWebhookConfiguration", ["workloads.kvinject.io", "pod-identity.kvinject.io"]),
    ]:
        for hook_name in names:
            hook = webhook(value_set, kind, hook_name)
            labels = {**LABELLED, "aadpodidbinding": "checkout"}
            assert not reaches(hook, namespace_labels(name), labels), f"{hook_name} reaches {name}"
            assert reaches(hook, namespace_labels("shop"), labels), f"{hook_name} misses an opted-in namespace"


@every_set
def test_the_mutating_webhook_entry(value_set):
    configuration = one(value_set, "MutatingWebhookConfiguration")
    assert [hook["name"] for hook in configuration["webhooks"]] == ["pods.kvinject.io"]
    hook = configuration["webhooks"][0]
    assert hook["rules"] == [
        {"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "operations": ["CREATE"], "scope": "Namespaced"}
    ]
    assert hook["clientConfig"]["service"] == {"name": FULLNAME, "namespace": NAMESPACE, "path": "/mutate", "port": 443}
    assert hook["sideEffects"] == "NoneOnDryRun"
    assert hook["failurePolicy"] == "Fail"
    assert hook["reinvocationPolicy"] == "IfNeeded"
    assert hook["timeoutSeconds"] == 5
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["matchPolicy"] == "Equivalent"


@every_set
def test_the_workload_validation_never_blocks_workload_edits(value_set):
    hook = webhook(value_set, "ValidatingWebhookConfiguration", "workloads.kvinject.io")
    assert hook["failurePolicy"] == "Ignore"
    assert hook["sideEffects"] == "None"
    assert hook["timeoutSeconds"] == 5
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["clientConfig"]["service"]["path"] == "/validate-workloads"
    assert "objectSelector" not in hook, "the pod label is on the template, which objectSelector cannot see"
    covered = {
        (group, resource, operation)
        for rule in hook["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for operation in rule["operations"]
    }
    expected = {
        (group, resource, operation)
        for group, resource in [
            ("apps", "deployments"), ("apps", "statefulsets"), ("apps", "daemonsets"),
            ("apps", "replicasets"), ("batch", "jobs"), ("batch", "cronjobs"),
        ]
        for operation in ("CREATE", "UPDATE")
    }
    assert covered == expected
    assert all(rule["apiVersions"] == ["v1"] and rule["scope"] == "Namespaced" for rule in hook["rules"])
    # Any workload in an opted-in namespace is checked, labelled or not.
    assert reaches(hook, namespace_labels("shop"), {"app": "checkout"})


@every_set
def test_the_pod_identity_policy_sees_only_pods_with_the_binding_label(value_set):
    hook = webhook(value_set, "ValidatingWebhookConfiguration", "pod-identity.kvinject.io")
    shop = namespace_labels("shop")
    assert reaches(hook, shop, {"aadpodidbinding": "checkout"})
    assert reaches(hook, shop, {"aadpodidbinding": ""})
    assert not reaches(hook, shop, {"app": "checkout", "kvinject.io/inject": "true"})
    # AAD Pod Identity lets a pod of any namespace claim a binding: the policy covers every
    # namespace, opted in or not, but the system ones and kvinject's own.
    assert reaches(hook, namespace_labels("quiet", opted_in=False), {"aadpodidbinding": "checkout"})
    for system in ("kube-system", "kube-node-lease", "kvinject"):
        assert not reaches(hook, namespace_labels(system), {"aadpodidbinding": "checkout"})
    assert hook["failurePolicy"] == "Fail"
    assert hook["sideEffects"] == "None"
    assert hook["timeoutSeconds"] == 5
    assert hook["clientConfig"]["service"]["path"] == "/validate-pod-identity"
    assert hook["rules"] == [
        {"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "operations": ["CREATE", "UPDATE"], "scope": "Namespaced"}
    ]


@every_set
def test_every_webhook_calls_the_kvinject_service_on_its_https_port(value_set):
    service = one(value_set, "Service")
    https = [port for port in service["spec"]["ports"] if port["name"] == "https"]
    assert len(https) == 1 and https[0]["port"] == 443
    ports = {port["name"]: port["containerPort"] for port in container(value_set)["ports"]}
    assert ports[https[0]["targetPort"]] == 8443
    pod_labels = one(value_set, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert selector_matches({"matchLabels": service["spec"]["selector"]}, pod_labels)
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        for hook in one(value_set, kind)["webhooks"]:
            target = hook["clientConfig"]["service"]
            assert (target["name"], target["namespace"], target["port"]) == (FULLNAME, NAMESPACE, 443)


# --- Certificates ------------------------------------------------------------------------------


@every_set
def test_the_ca_bundle_comes_from_the_chosen_certificate_source(value_set):
    mode = CERT_MODE[value_set]
    configurations = [one(value_set, "MutatingWebhookConfiguration"), one(value_set, "ValidatingWebhookConfiguration")]
    hooks = [hook for configuration in configurations for hook in configuration["webhooks"]]
    annotations = [configuration["metadata"].get("annotations", {}) for configuration in configurations]
    if mode == "certManager":
        assert all(a == {"cert-manager.io/inject-ca-from": f"{NAMESPACE}/{FULLNAME}-serving"} for a in annotations)
        assert all("caBundle" not in hook["clientConfig"] for hook in hooks)
        certificate = one(value_set, "Certificate", f"{FULLNAME}-serving")
        assert certificate["spec"]["secretName"] == TLS_SECRET
        assert certificate["spec"]["dnsNames"] == [
            FULLNAME,
            f"{FULLNAME}.{NAMESPACE}",
            f"{FULLNAME}.{NAMESPACE}.svc",
            f"{FULLNAME}.{NAMESPACE}.svc.cluster.local",
        ]
    elif mode == "provided":
        assert all(not a for a in annotations)
        secret = one(value_set, "Secret", TLS_SECRET)
        assert secret["type"] == "kubernetes.io/tls"
        ca = base64.b64decode(secret["data"]["ca.crt"]).decode()
        assert ca.startswith("-----BEGIN CERTIFICATE-----")
        assert base64.b64decode(secret["data"]["tls.key"]).decode().startswith("-----BEGIN ")
        for hook in hooks:
            assert base64.b64decode(hook["clientConfig"]["caBundle"]).decode() == ca
    else:
        assert all(not a for a in annotations)
        assert all("caBundle" not in hook["clientConfig"] for hook in hooks), "kvinject patches caBundle itself"
        assert not objects(value_set, "Secret"), "kvinject creates its own Secret"
        assert not objects(value_set, "Certificate")


def test_the_chart_makes_its_own_ca_chain_for_cert_manager():
    assert one("cert-manager", "Issuer", f"{FULLNAME}-selfsigned")["spec"] == {"selfSigned": {}}
    ca_certificates = [d for d in objects("cert-manager", "Certificate") if d["spec"].get("isCA")]
    assert len(ca_certificates) == 1
    ca = ca_certificates[0]
    assert ca["spec"]["issuerRef"] == {"name": f"{FULLNAME}-selfsigned", "kind": "Issuer", "group": "cert-manager.io"}
    ca_issuer = one("cert-manager", "Issuer", f"{FULLNAME}-ca")
    assert ca_issuer["spec"] == {"ca": {"secretName": ca["spec"]["secretName"]}}
    serving = one("cert-manager", "Certificate", f"{FULLNAME}-serving")
    assert serving["spec"]["issuerRef"] == {"name": f"{FULLNAME}-ca", "kind": "Issuer", "group": "cert-manager.io"}
    assert "server auth" in serving["spec"]["usages"]


def test_a_given_issuer_replaces_the_chain():
    assert not objects("cert-manager-issuer", "Issuer")
    [certificate] = objects("cert-manager-issuer", "Certificate")
    assert certificate["spec"]["issuerRef"] == {"name": "corporate-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}


def flags(value_set):
    """The serve command's flags: {"--flag": "value"}, and True for a flag without a value."""
    args = container(value_set)["args"]
    assert args[0] == "serve"
    parsed, index = {}, 1
    while index < len(args):
        flag = args[index]
        assert flag.startswith("--") and flag not in parsed, args
        if index + 1 < len(args) and not args[index + 1].startswith("--"):
            parsed[flag], index = args[index + 1], index + 2
        else:
            parsed[flag], index = True, index + 1
    return parsed


FEATURE_FLAGS = {
    "--rotation-restarts", "--rotation-debounce", "--rotation-min-interval", "--rotation-max-concurrent",
    "--uninjected-pods", "--evict-uninjected", "--eviction-interval", "--denial-events",
}
# Value set -> (debounce, min interval, max concurrent) or the eviction interval it sets; the
# chart's defaults elsewhere.
ROTATION_SETTINGS = {"rotation-restarts": ("45s", "1h", "5")}
EVICTION_INTERVAL = {"uninjected-eviction": "1m"}


@every_set
def test_each_optional_feature_passes_its_flags_only_when_on(value_set):
    features = FEATURES.get(value_set, set())
    expected = {}
    if "rotation" in features:
        debounce, min_interval, max_concurrent = ROTATION_SETTINGS.get(value_set, ("30s", "10m", "2"))
        expected |= {
            "--rotation-restarts": True,
            "--rotation-debounce": debounce,
            "--rotation-min-interval": min_interval,
            "--rotation-max-concurrent": max_concurrent,
        }
    if "uninjected" in features:
        expected["--uninjected-pods"] = True
    if "evict" in features:
        expected |= {"--evict-uninjected": True, "--eviction-interval": EVICTION_INTERVAL.get(value_set, "10s")}
    if "denial" in features:
        expected["--denial-events"] = True
    given = flags(value_set)
    assert {flag: value for flag, value in given.items() if flag in FEATURE_FLAGS} == expected


@every_set
def test_the_plan_cache_size_reaches_kvinject(value_set):
    expected = "0" if value_set == "plan-cache-off" else "64"
    assert flags(value_set)["--plan-cache-entries"] == expected


@every_set
def test_the_serving_certificate_reaches_kvinject(value_set):
    given = flags(value_set)
    pod = one(value_set, "Deployment")["spec"]["template"]["spec"]
    assert {"--listen": "0.0.0.0:8443", "--health-listen": "0.0.0.0:8080", "--log-format": "json"}.items() <= given.items()
    if CERT_MODE[value_set] == "selfManaged":
        assert {
            "--self-managed-certs": True,
            "--tls-secret-name": TLS_SECRET,
            "--webhook-configuration": FULLNAME,
            "--service-name": FULLNAME,
        }.items() <= given.items()
        assert "--tls-cert-file" not in given and "--tls-key-file" not in given
        # Nothing mounted but, when kvinject checks client certificates, their CA.
        assert all(v["name"] == "client-ca" for v in pod.get("volumes", []))
        assert all(m["name"] == "client-ca" for m in container(value_set).get("volumeMounts", []))
    else:
        assert "--self-managed-certs" not in given and "--tls-secret-name" not in given
        assert given["--tls-cert-file"] == "/etc/kvinject/tls/tls.crt"
        assert given["--tls-key-file"] == "/etc/kvinject/tls/tls.key"
        assert pod["volumes"] == [{"name": "tls", "secret": {"secretName": TLS_SECRET}}]
        assert container(value_set)["volumeMounts"] == [{"name": "tls", "mountPath": "/etc/kvinject/tls", "readOnly": True}]


# --- RBAC --------------------------------------------------------------------------------------


def rules(value_set, kind):
    return [rule for role in objects(value_set, kind) for rule in role["rules"]]


def grants(rule):
    return {
        (group, resource, verb)
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


EVERY_MODE_CLUSTER_GRANTS = {
    ("", "namespaces", verb) for verb in ("get", "list", "watch")
} | {
    ("", "serviceaccounts", verb) for verb in ("get", "list", "watch")
} | {
    ("", "pods", verb) for verb in ("list", "watch")
} | {
    ("aadpodidentity.k8s.io", "azureidentitybindings", verb) for verb in ("get", "list", "watch")
} | {
    ("secrets-store.csi.x-k8s.io", "secretproviderclasses", verb)
    for verb in ("get", "list", "watch", "create", "update", "patch", "delete")
}


# What each optional feature adds to the ClusterRole, and nothing more.
OWNER_CHAIN_GRANTS = {
    ("apps", resource, "get") for resource in ("replicasets", "deployments", "statefulsets", "daemonsets")
} | {
    ("batch", resource, "get") for resource in ("jobs", "cronjobs")
}
EVENTS_GRANT = ("", "events", "create")
FEATURE_CLUSTER_GRANTS = {
    "rotation": OWNER_CHAIN_GRANTS | {EVENTS_GRANT} | {
        ("secrets-store.csi.x-k8s.io", "secretproviderclasspodstatuses", verb) for verb in ("get", "list", "watch")
    } | {
        ("apps", resource, "patch") for resource in ("deployments", "statefulsets", "daemonsets")
    },
    "uninjected": {EVENTS_GRANT},
    "evict": {("", "pods/eviction", "create")},
    "denial": OWNER_CHAIN_GRANTS | {EVENTS_GRANT},
}
# The groups and resources only the optional features are granted.
FEATURE_RESOURCES = {(group, resource) for grants in FEATURE_CLUSTER_GRANTS.values() for group, resource, _ in grants}


def feature_grants(value_set):
    return set().union(*(FEATURE_CLUSTER_GRANTS[feature] for feature in FEATURES.get(value_set, ())))


@every_set
def test_rbac_has_no_wildcards(value_set):
    for rule in rules(value_set, "ClusterRole") + rules(value_set, "Role"):
        for field in ("apiGroups", "resources", "verbs", "resourceNames"):
            assert not any("*" in item for item in rule.get(field, [])), rule
        assert "nonResourceURLs" not in rule


@every_set
def test_rbac_is_exactly_what_kvinject_needs(value_set):
    self_managed = CERT_MODE[value_set] == "selfManaged"
    cluster = [rule for rule in rules(value_set, "ClusterRole") if "resourceNames" not in rule]
    assert set().union(*map(grants, cluster)) == EVERY_MODE_CLUSTER_GRANTS | feature_grants(value_set)
    named = [rule for rule in rules(value_set, "ClusterRole") if "resourceNames" in rule]
    if self_managed:
        assert len(named) == 1
        assert named[0]["resourceNames"] == [FULLNAME]
        assert grants(named[0]) == {
            ("admissionregistration.k8s.io", kind, verb)
            for kind in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations")
            for verb in ("get", "patch")
        }
    else:
        assert named == []
    role = one(value_set, "Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    leases = [rule for rule in role["rules"] if "leases" in rule["resources"]]
    assert len(leases) == 1 and grants(leases[0]) == {("coordination.k8s.io", "leases", v) for v in ("get", "create", "update")}
    assert len(objects(value_set, "Role")) == len(objects(value_set, "ClusterRole")) == 1


@every_set
def test_every_resource_and_verb_is_granted_by_one_rule(value_set):
    # Features that need the same access share one rule (one events create, one apps get).
    cluster = [grant for rule in rules(value_set, "ClusterRole") for grant in grants(rule)]
    repeated = {grant for grant in cluster if cluster.count(grant) > 1}
    assert not repeated, f"granted by more than one rule: {sorted(repeated)}"


def test_the_optional_features_are_off_by_default():
    cluster = set().union(*map(grants, rules("defaults", "ClusterRole")))
    assert not {(group, resource) for group, resource, _ in cluster} & FEATURE_RESOURCES
    assert not set(flags("defaults")) & FEATURE_FLAGS


def test_only_rotation_restarts_may_change_a_workload():
    restart = {("apps", resource, "patch") for resource in ("deployments", "statefulsets", "daemonsets")}
    for value_set, features in FEATURES.items():
        written = {
            grant
            for rule in rules(value_set, "ClusterRole")
            for grant in grants(rule)
            if grant[0] in ("apps", "batch") and grant[2] != "get"
        }
        assert written == (restart if "rotation" in features else set()), value_set


@every_set
def test_no_secret_access_but_kvinject_own_certificate(value_set):
    cluster_secret_rules = [rule for rule in rules(value_set, "ClusterRole") if "secrets" in rule["resources"]]
    assert cluster_secret_rules == [], "no cluster-wide Secret access, ever"
    secret_rules = [rule for rule in rules(value_set, "Role") if "secrets" in rule["resources"]]
    if CERT_MODE[value_set] != "selfManaged":
        assert secret_rules == []
        return
    for rule in secret_rules:
        assert rule["resources"] == ["secrets"] and rule["apiGroups"] == [""]
        if rule["verbs"] == ["create"]:
            # create cannot be limited by resourceNames; it reads nothing.
            continue
        assert rule["resourceNames"] == [TLS_SECRET], rule
        assert set(rule["verbs"]) == {"get", "update", "patch"}, rule
    assert sorted(sorted(rule["verbs"]) for rule in secret_rules) == [["create"], ["get", "patch", "update"]]


@every_set
def test_the_bindings_give_the_roles_to_kvinject_service_account_only(value_set):
    account = one(value_set, "ServiceAccount")
    assert one(value_set, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]
    for kind, role_kind in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        binding = one(value_set, kind)
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": FULLNAME}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}]


# --- kvinject's own pods -----------------------------------------------------------------------


@every_set
def test_the_pods_run_locked_down(value_set):
    pod = one(value_set, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container(value_set)["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert "priorityClassName" not in pod, "empty by default, so left out"
    assert not container(value_set).get("securityContext", {}).get("privileged")


@every_set
def test_the_pods_report_health_and_drain_before_they_are_killed(value_set):
    main = container(value_set)
    pod = one(value_set, "Deployment")["spec"]["template"]["spec"]
    ports = {port["name"]: port["containerPort"] for port in main["ports"]}
    assert ports == {"https": 8443, "health": 8080}
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert pod["terminationGracePeriodSeconds"] == 30 > 20, "longer than the server's 20 s drain"
    env = {entry["name"]: entry for entry in main["env"]}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["KVINJECT_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["RUST_LOG"]["value"] == "info"
    given = flags(value_set)
    assert given["--gc-grace-period"] == "10m"
    assert given["--verify-objects"] == "warn"
    assert "--default-vault" not in given and "--default-tenant-id" not in given


@every_set
def test_the_default_resources(value_set):
    assert container(value_set)["resources"] == {
        "requests": {"cpu": "100m", "memory": "48Mi"},
        "limits": {"memory": "192Mi"},
    }


@every_set
def test_replicas_spread_over_nodes_and_a_budget_keeps_one_up(value_set):
    deployment = one(value_set, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector_matches(deployment["spec"]["selector"], pod_labels)
    [spread] = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["whenUnsatisfiable"] == "ScheduleAnyway"
    assert selector_matches(spread["labelSelector"], pod_labels)
    budgets = objects(value_set, "PodDisruptionBudget")
    if deployment["spec"]["replicas"] > 1:
        [budget] = budgets
        assert budget["spec"] == {"maxUnavailable": 1, "selector": deployment["spec"]["selector"]}
        assert selector_matches(budget["spec"]["selector"], pod_labels)
    else:
        assert budgets == [], "a budget for one replica would block every drain"


def test_two_replicas_by_default_and_one_on_request():
    assert one("defaults", "Deployment")["spec"]["replicas"] == 2
    assert one("single-replica", "Deployment")["spec"]["replicas"] == 1
    assert not objects("single-replica", "PodDisruptionBudget")


def test_committed_manifests_say_they_are_generated():
    for name in COMMITTED.values():
        text = (ROOT / "manifests" / name).read_text()
        assert text.startswith("# Generated by scripts/render-manifests"), name
        assert "Do not edit by hand" in text.splitlines()[2]
        assert not any(line != line.rstrip() for line in text.splitlines()), f"{name}: trailing whitespace"
        assert "kind: Namespace" not in text, "the namespace is created before applying, not by the manifests"


@every_set
def test_the_webhook_port_is_fenced_only_when_asked_and_then_only_for_its_sources(value_set):
    policies = [d for d in documents(value_set) if d["kind"] == "NetworkPolicy"]
    if value_set != "hardened":
        assert policies == []
        return
    (policy,) = policies
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    webhook, health = policy["spec"]["ingress"]
    assert webhook["ports"] == [{"protocol": "TCP", "port": 8443}]
    assert webhook["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}]
    assert health == {"ports": [{"protocol": "TCP", "port": 8080}]}
    deployment = one(value_set, "Deployment")
    assert selector_matches(policy["spec"]["podSelector"], deployment["spec"]["template"]["metadata"]["labels"])


@every_set
def test_a_client_ca_makes_kvinject_require_client_certificates(value_set):
    deployment = one(value_set, "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    config_maps = [d for d in documents(value_set) if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-client-ca")]
    if value_set != "hardened":
        assert "--client-ca-file" not in args and config_maps == []
        return
    assert args[args.index("--client-ca-file") + 1] == "/etc/kvinject/client-ca/ca.crt"
    (config_map,) = config_maps
    assert config_map["data"]["ca.crt"].startswith("-----BEGIN CERTIFICATE-----")
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert {"name": "client-ca", "configMap": {"name": config_map["metadata"]["name"]}} in volumes

