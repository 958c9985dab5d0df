//! TLS Secrets for Ingress (`tls-secret.`) and several vaults per pod (`?vault=`), through the
//! pure core: contract sections 3 and 4.

mod support;

use kvinject::core::plan::{Decision, InjectionPlan};
use serde_json::{Value, json};
use support::*;

const TLS: &str = "kvinject.io/tls-secret.shop-tls";

/// A pod in vault `shop-kv` with the usual identity.
fn shop_pod() -> PodBuilder {
    pod()
        .container("app")
        .annotate("kvinject.io/vault", "shop-kv")
        .annotate("kvinject.io/tenant-id", TENANT)
}

/// The plan is valid to apply, and planning the patched pod again asks for nothing more.
fn assert_idempotent(
    pod: &Value,
    plan: &InjectionPlan,
    facts: &kvinject::core::facts::DocumentFacts,
) -> Value {
    let patched = apply(pod, &plan.patch);
    let again = inject(&patched, facts);
    assert!(again.patch.is_empty(), "second pass: {:?}", again.patch);
    assert_eq!(again.spc_names(), plan.spc_names());
    patched
}

#[test]
fn a_tls_secret_is_one_secret_object_synced_as_kubernetes_io_tls_with_both_keys() {
    let pod = shop_pod().annotate(TLS, "shop-wildcard-cert").build();
    let plan = inject(&pod, &facts());
    assert_eq!(plan.generated_spcs.len(), 1);
    let spc = &plan.generated_spcs[0].manifest();
    assert_eq!(
        provider_objects(spc),
        vec![
            json!({"objectName": "shop-wildcard-cert", "objectType": "secret", "objectAlias": "shop-tls.pem"})
        ]
    );
    assert_eq!(
        spc["spec"]["secretObjects"],
        json!([{"secretName": "shop-tls", "type": "kubernetes.io/tls", "data": [
            {"objectName": "shop-tls.pem", "key": "tls.key"},
            {"objectName": "shop-tls.pem", "key": "tls.crt"}]}]),
        "no Opaque Secret when no env var asks for one"
    );
    let patched = assert_idempotent(&pod, &plan, &facts());
    assert_eq!(
        patched["spec"]["containers"][0]["volumeMounts"],
        json!([{"name": "kvinject-secrets", "mountPath": "/mnt/secrets-store", "readOnly": true}])
    );
    assert!(patched["spec"]["containers"][0].get("env").is_none());
}

#[test]
fn a_tls_secret_shares_the_file_of_the_same_object_and_sits_beside_the_opaque_secret() {
    let pod = shop_pod()
        .annotate(
            "kvinject.io/file.tls.pem",
            "shop-cert@0123456789abcdef0123456789abcdef",
        )
        .annotate(
            TLS,
            "secret/shop-cert@0123456789abcdef0123456789abcdef?format=pem",
        )
        .annotate("kvinject.io/env.DB_PASSWORD", "db-password")
        .build();
    let plan = inject(&pod, &facts());
    let spc = &plan.generated_spcs[0].manifest();
    let objects = provider_objects(spc);
    // `?format=pem` makes it another reference of the same certificate: its own file.
    assert_eq!(objects.len(), 3, "{objects:?}");
    let secrets = spc["spec"]["secretObjects"].as_array().unwrap();
    assert_eq!(secrets[0]["type"], "Opaque");
    assert_eq!(secrets[0]["secretName"], plan.spc_names()[0]);
    assert_eq!(secrets[1]["secretName"], "shop-tls");
    assert_eq!(secrets[1]["data"][0]["objectName"], "shop-tls.pem");

    let same = shop_pod()
        .annotate("kvinject.io/file.tls.pem", "shop-cert")
        .annotate(TLS, "shop-cert")
        .build();
    let plan = inject(&same, &facts());
    let spc = &plan.generated_spcs[0].manifest();
    assert_eq!(provider_objects(spc).len(), 1, "one object, one file");
    assert_eq!(
        spc["spec"]["secretObjects"][0]["data"][0]["objectName"],
        "tls.pem"
    );
    assert_idempotent(&same, &plan, &facts());
}

#[test]
fn a_tls_secret_that_cannot_hold_a_key_and_chain_is_denied_naming_the_annotation() {
    let cases: &[(&str, &str, &str)] = &[
        (
            TLS,
            "cert/shop-cert",
            "names a cert object, which holds no private key",
        ),
        (TLS, "key/shop-key", "names a key object"),
        (TLS, "shop-cert?format=pfx", "format=pfx"),
        (TLS, "shop-cert?encoding=base64", "encoding=base64"),
        (
            "kvinject.io/tls-secret.Shop_TLS",
            "shop-cert",
            "is not a Secret name",
        ),
        (
            "kvinject.io/tls-secret.shop..tls",
            "shop-cert",
            "is not a Secret name",
        ),
        (
            "kvinject.io/tls-secret.shop.-tls",
            "shop-cert",
            "is not a Secret name",
        ),
        (
            "kvinject.io/tls-secret.kvinject-0123",
            "shop-cert",
            "kept for the Secrets kvinject generates",
        ),
    ];
    for (key, value, expected) in cases {
        let message = deny(&shop_pod().annotate(key, value).build(), &facts());
        assert!(
            message.contains(&format!("annotation {key}")),
            "{key}: {message}"
        );
        assert!(message.contains(expected), "{key}={value}: {message}");
    }
    let message = deny(
        &shop_pod()
            .annotate("kvinject.io/file.shop-tls.pem", "other-cert")
            .annotate(TLS, "shop-cert")
            .build(),
        &facts(),
    );
    assert!(
        message.contains(&format!("annotation {TLS}"))
            && message.contains("mounts secret/shop-cert as file shop-tls.pem"),
        "{message}"
    );
}

/// A kvinject SPC of the namespace that syncs Secret `shop-tls` from `certificate` in `vault`.
fn other_spc_syncing_shop_tls(vault: &str, certificate: &str, managed: bool) -> Value {
    let pod = pod()
        .container("app")
        .annotate("kvinject.io/vault", vault)
        .annotate("kvinject.io/tenant-id", TENANT)
        .annotate(TLS, certificate)
        .annotate("kvinject.io/env.OTHER", "other")
        .build();
    let mut spc = inject(&pod, &facts()).generated_spcs[0].manifest();
    if !managed {
        spc["metadata"]["labels"] = json!({});
        spc["metadata"]["name"] = json!("hand-written");
    }
    spc
}

#[test]
fn a_tls_secret_synced_from_another_certificate_by_another_spc_is_a_conflict() {
    let pod = shop_pod().annotate(TLS, "shop-wildcard-cert").build();
    let other = other_spc_syncing_shop_tls("shop-kv", "old-cert", true);
    let message = deny(&pod, &facts_with(std::slice::from_ref(&other)));
    let other_name = other["metadata"]["name"].as_str().unwrap();
    assert!(
        message.contains(&format!("annotation {TLS}"))
            && message.contains("synced from certificate shop-kv/old-cert")
            && message.contains(other_name)
            && message.contains("shop-kv/shop-wildcard-cert")
            && message.contains("name another Secret"),
        "{message}"
    );
    // Another vault's certificate of the same name, or another pinned version, is another
    // certificate: the CSI driver keeps a synced Secret at the version that filled it first.
    for different in [
        other_spc_syncing_shop_tls("other-kv", "shop-wildcard-cert", true),
        other_spc_syncing_shop_tls(
            "shop-kv",
            "shop-wildcard-cert@0123456789abcdef0123456789abcdef",
            true,
        ),
    ] {
        deny(&pod, &facts_with(&[different]));
    }
    // A rollout of the same certificate (other env vars, names in other case) is no conflict.
    let rollout = other_spc_syncing_shop_tls("SHOP-KV", "Shop-Wildcard-Cert", true);
    inject(&pod, &facts_with(&[rollout]));
    // An SPC that is not kvinject's already fills the Secret: never taken over.
    let hand_written = other_spc_syncing_shop_tls("shop-kv", "shop-wildcard-cert", false);
    let message = deny(&pod, &facts_with(&[hand_written]));
    assert!(
        message.contains("is synced by SecretProviderClass hand-written, which is not kvinject's"),
        "{message}"
    );
    // Nor when it syncs that name as an Opaque Secret.
    let opaque = reference_spc(json!([{"secretName": "shop-tls", "type": "Opaque",
        "data": [{"objectName": "shop-cert", "key": "k"}]}]));
    deny(&pod, &facts_with(&[opaque]));
}

fn reference_spc(secret_objects: Value) -> Value {
    json!({"apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
        "metadata": {"name": "ingress-certs", "namespace": NS},
        "spec": {"provider": "azure", "parameters": {"keyvaultName": "shop-kv", "tenantId": TENANT,
            "clientID": CLIENT, "objects": "array:\n  - |\n    objectName: shop-cert\n    objectType: secret\n"},
            "secretObjects": secret_objects}})
}

#[test]
fn reference_mode_only_checks_that_the_spc_syncs_the_tls_secret() {
    let good = reference_spc(
        json!([{"secretName": "shop-tls", "type": "kubernetes.io/tls", "data": [
        {"objectName": "shop-cert", "key": "tls.key"}, {"objectName": "shop-cert", "key": "tls.crt"}]}]),
    );
    let pod = pod()
        .container("app")
        .annotate("kvinject.io/secret-provider-class", "ingress-certs")
        .annotate(TLS, "shop-cert")
        .build();
    let facts = facts_with(&[good]);
    let plan = inject(&pod, &facts);
    assert!(plan.generated_spcs.is_empty());
    assert_eq!(plan.spc_names(), ["ingress-certs"]);
    let patched = assert_idempotent(&pod, &plan, &facts);
    assert!(patched["spec"]["containers"][0].get("env").is_none());

    let message = deny(&pod.clone().tap_annotate(TLS, "other-cert"), &facts);
    assert!(
        message.contains("syncs Secret shop-tls from object shop-cert"),
        "{message}"
    );

    let missing = reference_spc(json!([]));
    let message = deny(&pod, &facts_with(&[missing]));
    assert!(
        message.contains("syncs no kubernetes.io/tls Secret shop-tls"),
        "{message}"
    );

    let half = reference_spc(
        json!([{"secretName": "shop-tls", "type": "kubernetes.io/tls", "data": [
        {"objectName": "shop-cert", "key": "tls.crt"}]}]),
    );
    let message = deny(&pod, &facts_with(&[half]));
    assert!(
        message.contains("without tls.key and tls.crt from one object"),
        "{message}"
    );
}

fn two_vault_pod() -> PodBuilder {
    shop_pod()
        .container("worker")
        .annotate("kvinject.io/env.DB_PASSWORD", "db-password")
        .annotate(
            "kvinject.io/env.DATADOG_KEY",
            "datadog-api-key?vault=platform-kv",
        )
        .annotate(
            "kvinject.io/file.ca.pem",
            "cert/internal-ca?vault=Platform-KV",
        )
}

#[test]
fn two_vaults_give_two_spcs_two_volumes_and_env_from_each_vaults_secret() {
    let pod = two_vault_pod().build();
    let plan = inject(&pod, &facts());
    assert_eq!(plan.generated_spcs.len(), 2);
    let (own, platform) = (&plan.generated_spcs[0], &plan.generated_spcs[1]);
    assert_eq!(plan.spc_names(), [own.name.clone(), platform.name.clone()]);
    assert_eq!(
        own.manifest()["spec"]["parameters"]["keyvaultName"],
        "shop-kv"
    );
    assert_eq!(
        platform.manifest()["spec"]["parameters"]["keyvaultName"],
        "platform-kv"
    );
    for spc in [own, platform] {
        assert_eq!(spc.manifest()["spec"]["parameters"]["clientID"], CLIENT);
        assert_eq!(spc.manifest()["spec"]["parameters"]["tenantId"], TENANT);
    }
    let names: Vec<Value> = provider_objects(&platform.manifest())
        .into_iter()
        .map(|o| o["objectName"].clone())
        .collect();
    // By file name: `DATADOG_KEY` before `ca.pem`.
    assert_eq!(names, [json!("datadog-api-key"), json!("internal-ca")]);
    assert_eq!(plan.objects.len(), 2);
    assert_eq!(plan.objects[1].vault, "platform-kv");

    let patched = assert_idempotent(&pod, &plan, &facts());
    assert_eq!(
        patched["spec"]["volumes"],
        json!([
            {"name": "kvinject-secrets", "csi": {"driver": "secrets-store.csi.k8s.io", "readOnly": true,
                "volumeAttributes": {"secretProviderClass": own.name}}},
            {"name": "kvinject-secrets-platform-kv", "csi": {"driver": "secrets-store.csi.k8s.io", "readOnly": true,
                "volumeAttributes": {"secretProviderClass": platform.name}}},
        ])
    );
    for container in patched["spec"]["containers"].as_array().unwrap() {
        assert_eq!(
            container["volumeMounts"],
            json!([
                {"name": "kvinject-secrets", "mountPath": "/mnt/secrets-store", "readOnly": true},
                {"name": "kvinject-secrets-platform-kv", "mountPath": "/mnt/secrets-store-platform-kv", "readOnly": true},
            ])
        );
        assert_eq!(
            container["env"],
            json!([
                {"name": "DATADOG_KEY", "valueFrom": {"secretKeyRef": {"name": platform.name, "key": "DATADOG_KEY"}}},
                {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": own.name, "key": "DB_PASSWORD"}}},
            ])
        );
    }
    assert_eq!(
        patched["metadata"]["annotations"]["kvinject.io/injected"],
        format!("{},{}", own.name, platform.name)
    );
}

#[test]
fn one_vault_stays_exactly_as_before_whoever_names_it() {
    let plain = shop_pod()
        .annotate("kvinject.io/env.DB_PASSWORD", "db-password")
        .build();
    let named = shop_pod()
        .annotate("kvinject.io/env.DB_PASSWORD", "db-password?vault=Shop-KV")
        .build();
    assert_eq!(inject(&plain, &facts()), inject(&named, &facts()));

    // Every object in another vault, and no vault for the pod: one volume, beside the path.
    let elsewhere = pod()
        .container("app")
        .annotate("kvinject.io/tenant-id", TENANT)
        .annotate("kvinject.io/mount-path", "/etc/secrets/")
        .annotate(
            "kvinject.io/file.ca.pem",
            "cert/internal-ca?vault=platform-kv",
        )
        .build();
    let plan = inject(&elsewhere, &facts());
    let patched = assert_idempotent(&elsewhere, &plan, &facts());
    assert_eq!(
        patched["spec"]["containers"][0]["volumeMounts"],
        json!([{"name": "kvinject-secrets-platform-kv", "mountPath": "/etc/secrets-platform-kv", "readOnly": true}])
    );
    let message = deny(
        &elsewhere.clone().tap_annotate("kvinject.io/env.X", "x"),
        &facts(),
    );
    assert!(
        message.contains("no kvinject.io/vault for this pod"),
        "{message}"
    );
    // A vault the pod names is checked even when every object names another.
    let message = deny(&elsewhere.tap_annotate("kvinject.io/vault", "kv"), &facts());
    assert!(
        message.contains("annotation kvinject.io/vault: \"kv\" is not a Key Vault name"),
        "{message}"
    );
}

trait TapAnnotate {
    fn tap_annotate(self, key: &str, value: &str) -> Value;
}

impl TapAnnotate for Value {
    fn tap_annotate(mut self, key: &str, value: &str) -> Value {
        self["metadata"]["annotations"][key] = json!(value);
        self
    }
}

#[test]
fn a_late_container_gets_every_vaults_mount() {
    let pod = two_vault_pod().build();
    let plan = inject(&pod, &facts());
    let mut patched = apply(&pod, &plan.patch);
    patched["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "late", "image": "example/late:1"}));
    let again = inject(&patched, &facts());
    let late = apply(&patched, &again.patch)["spec"]["containers"][2].clone();
    assert_eq!(late["volumeMounts"].as_array().unwrap().len(), 2);
    assert_eq!(late["env"].as_array().unwrap().len(), 2);
}

#[test]
fn every_vault_passes_the_namespace_guardrails() {
    let guarded = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS,
        "labels": {"kvinject.io/injection": "enabled"},
        "annotations": {"kvinject.io/allowed-vaults": "shop-kv"}}});
    let message = deny(&two_vault_pod().build(), &facts_with(&[guarded]));
    assert!(
        message.contains(
            "annotation kvinject.io/file.ca.pem: Key Vault platform-kv is not among the vaults"
        ),
        "{message}"
    );
}

#[test]
fn reference_mode_refuses_the_vault_option_naming_the_annotation() {
    let facts = facts_with(&[reference_spc(json!([{"secretName": "s", "type": "Opaque",
        "data": [{"objectName": "shop-cert", "key": "k"}]}]))]);
    let pod = pod()
        .container("app")
        .annotate("kvinject.io/secret-provider-class", "ingress-certs")
        .annotate("kvinject.io/env.K", "k?vault=platform-kv")
        .build();
    let message = deny(&pod, &facts);
    assert!(
        message.contains("annotation kvinject.io/env.K")
            && message.contains("?vault= cannot be used"),
        "{message}"
    );
    assert!(matches!(
        decide(&pod.tap_annotate("kvinject.io/env.K", "k"), &facts),
        Ok(Decision::Inject(_))
    ));
}
