//! Every rule of contract sections 2-6, through the pure core.

mod support;

use json_patch::PatchOperation;
use kvinject::core::denial::DenialReason;
use kvinject::core::plan::{Decision, InjectionPlan, Settings, SkipReason};
use serde_json::{Value, json};
use support::*;

fn spc_of(plan: &InjectionPlan) -> Value {
    plan.generated_spcs
        .first()
        .expect("generate mode")
        .manifest()
}

fn objects(plan: &InjectionPlan) -> Vec<Value> {
    provider_objects(&spc_of(plan))
}

fn skip_reason(
    pod: &Value,
    facts: &kvinject::core::facts::DocumentFacts,
) -> (SkipReason, Vec<String>) {
    match decide(pod, facts) {
        Ok(Decision::Skip { reason, warnings }) => (reason, warnings),
        other => panic!("expected a skip, got {other:?}"),
    }
}

// ---- Section 2: opt-in ----

#[test]
fn opt_in_needs_the_label_and_honours_the_skip_annotation() {
    let facts = facts();
    let base = pod().container("app").wants_db_password();
    let cases: Vec<(&str, Value, SkipReason, bool)> = vec![
        (
            "no label, annotations",
            base.clone().without_label("kvinject.io/inject").build(),
            SkipReason::NotLabelled,
            true,
        ),
        (
            "label false",
            base.clone().label("kvinject.io/inject", "false").build(),
            SkipReason::NotLabelled,
            true,
        ),
        (
            "no label, no annotations",
            pod()
                .container("app")
                .without_label("kvinject.io/inject")
                .build(),
            SkipReason::NotLabelled,
            false,
        ),
        (
            "annotation false",
            base.clone().annotate("kvinject.io/inject", "false").build(),
            SkipReason::OptedOut,
            false,
        ),
        (
            "nothing requested",
            pod().container("app").build(),
            SkipReason::NothingRequested,
            true,
        ),
        (
            "mirror pod",
            base.clone()
                .annotate("kubernetes.io/config.mirror", "abc")
                .build(),
            SkipReason::MirrorPod,
            false,
        ),
    ];
    for (name, pod, reason, warns) in cases {
        let (got, warnings) = skip_reason(&pod, &facts);
        assert_eq!(got, reason, "{name}");
        assert_eq!(!warnings.is_empty(), warns, "{name}: {warnings:?}");
        for warning in warnings {
            assert!(warning.starts_with("kvinject: "), "{name}: {warning}");
        }
    }
}

#[test]
fn system_and_own_namespaces_are_never_injected() {
    let pod = pod().container("app").wants_db_password().build();
    for namespace in ["kube-system", "kube-node-lease", "kvinject"] {
        let decision = kvinject::core::plan::plan_pod(
            &kvinject::core::node::Node::from(&pod),
            namespace,
            &facts(),
            &settings(),
        )
        .unwrap();
        match decision {
            Decision::Skip {
                reason: SkipReason::IgnoredNamespace,
                warnings,
            } => {
                assert!(warnings[0].contains(namespace), "{warnings:?}")
            }
            other => panic!("{namespace}: {other:?}"),
        }
    }
}

#[test]
fn namespace_not_opted_in_is_a_warning() {
    let facts =
        facts_with(&[json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})]);
    let plan = inject(&pod().container("app").wants_db_password().build(), &facts);
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("kvinject.io/injection: enabled")),
        "{:?}",
        plan.warnings
    );
}

// ---- Section 3: annotations ----

#[test]
fn vault_and_tenant_come_from_pod_then_namespace_then_flags() {
    let ns_with = |vault: &str| {
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS,
            "labels": {"kvinject.io/injection": "enabled"},
            "annotations": {"kvinject.io/vault": vault, "kvinject.io/tenant-id": OTHER_CLIENT}}})
    };
    let bare = pod().container("app").annotate("kvinject.io/env.A", "a");
    let flags = Settings::new(Some("flag-kv".into()), Some(TENANT.into()), "kvinject");
    let vault_of = |pod: &Value, facts: &kvinject::core::facts::DocumentFacts| {
        match kvinject::core::plan::plan_pod(
            &kvinject::core::node::Node::from(pod),
            NS,
            facts,
            &flags,
        ) {
            Ok(Decision::Inject(plan)) => {
                let p = &plan.generated_spcs[0].manifest()["spec"]["parameters"];
                (
                    p["keyvaultName"].as_str().unwrap().to_owned(),
                    p["tenantId"].as_str().unwrap().to_owned(),
                )
            }
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        vault_of(&bare.clone().build(), &facts()),
        ("flag-kv".into(), TENANT.into())
    );
    assert_eq!(
        vault_of(&bare.clone().build(), &facts_with(&[ns_with("ns-kv")])),
        ("ns-kv".into(), OTHER_CLIENT.into())
    );
    let on_pod = bare
        .clone()
        .annotate("kvinject.io/vault", "pod-kv")
        .annotate("kvinject.io/tenant-id", TENANT)
        .build();
    assert_eq!(
        vault_of(&on_pod, &facts_with(&[ns_with("ns-kv")])),
        ("pod-kv".into(), TENANT.into())
    );

    let message = deny(&bare.clone().build(), &facts());
    assert!(
        message.starts_with("kvinject: no kvinject.io/vault for this pod"),
        "{message}"
    );
    assert!(message.contains("--default-vault"), "{message}");
    let message = deny(
        &bare.annotate("kvinject.io/vault", "kv-one").build(),
        &facts(),
    );
    assert!(message.contains("no kvinject.io/tenant-id"), "{message}");
}

#[test]
fn vault_names_follow_key_vault_rules() {
    let facts = facts();
    for (vault, ok) in [
        ("abc", true),
        ("a-b-c-1", true),
        ("A23456789012345678901234", true),
        ("ab", false),
        ("a234567890123456789012345", false),
        ("1abc", false),
        ("abc-", false),
        ("ab--c", false),
        ("ab_c", false),
    ] {
        let pod = pod()
            .container("app")
            .wants_db_password()
            .annotate("kvinject.io/vault", vault)
            .build();
        let result = decide(&pod, &facts);
        assert_eq!(result.is_ok(), ok, "{vault}: {result:?}");
        if let Err(message) = result {
            assert!(
                message.contains("annotation kvinject.io/vault")
                    && message.contains("Key Vault name"),
                "{message}"
            );
        }
    }
    let message = deny(
        &pod()
            .container("app")
            .wants_db_password()
            .annotate("kvinject.io/tenant-id", "not-a-guid")
            .build(),
        &facts,
    );
    assert!(
        message.contains("annotation kvinject.io/tenant-id") && message.contains("GUID"),
        "{message}"
    );
}

#[test]
fn bad_annotations_are_denied_by_name() {
    let facts = facts();
    let cases: &[(&str, &str, &str)] = &[
        (
            "kvinject.io/env.1X",
            "db",
            "kvinject.io/env.1X: `1X` is not an env var name",
        ),
        ("kvinject.io/env.A-B", "db", "not an env var name"),
        (
            "kvinject.io/env.A",
            "blob/db",
            "kvinject.io/env.A: reference \"blob/db\" has type `blob`",
        ),
        (
            "kvinject.io/env.A",
            "../etc",
            "kvinject.io/env.A: reference \"../etc\"",
        ),
        (
            "kvinject.io/file.x",
            "db@1",
            "kvinject.io/file.x: reference \"db@1\" has version",
        ),
        (
            "kvinject.io/file.x",
            "key/k?format=pfx",
            "pfx is only for secrets",
        ),
        ("kvinject.io/file..", "db", "not a valid annotation name"),
        ("kvinject.io/file.a/b", "db", "not a valid annotation name"),
        (
            "kvinject.io/mount-path",
            "relative/dir",
            "kvinject.io/mount-path: \"relative/dir\" is not an absolute path",
        ),
        ("kvinject.io/mount-path", "/", "is the root directory"),
        (
            "kvinject.io/mount-path",
            "/mnt/../etc",
            "contains a `.` or `..` segment",
        ),
        // `/mnt/a/.` is `/mnt/a`: another vault's `/mnt/a/.-v` would sit inside its CSI mount.
        (
            "kvinject.io/mount-path",
            "/mnt/a/.",
            "contains a `.` or `..` segment",
        ),
        (
            "kvinject.io/mount-path",
            "/.",
            "contains a `.` or `..` segment",
        ),
        (
            "kvinject.io/mount-path",
            "/mnt//a",
            "contains an empty segment",
        ),
        (
            "kvinject.io/containers",
            "app,ghost",
            "kvinject.io/containers: names container \"ghost\"",
        ),
        ("kvinject.io/containers", " , ", "names no container"),
        (
            "kvinject.io/secret-provider-class",
            "Not_A_Name",
            "is not a valid object name",
        ),
    ];
    for (key, value, expected) in cases {
        let pod = pod()
            .container("app")
            .wants_db_password()
            .annotate(key, value)
            .build();
        let Err(message) = decide(&pod, &facts) else {
            panic!("{key}={value} was not denied");
        };
        assert!(message.starts_with("kvinject: "), "{message}");
        assert!(message.contains(expected), "{key}={value}: {message}");
    }
    let long = format!("kvinject.io/env.{}", "A".repeat(60));
    let message = deny(
        &pod()
            .container("app")
            .wants_db_password()
            .annotate(&long, "db")
            .build(),
        &facts,
    );
    assert!(message.contains("at most 63"), "{message}");
    let numeric = pod()
        .container("app")
        .wants_db_password()
        .set("/metadata/annotations/kvinject.io~1env.N", json!(5))
        .build();
    assert!(deny(&numeric, &facts).contains("must be a string"));
}

#[test]
fn unknown_keys_and_meaningless_values_warn() {
    let pod = pod()
        .container("app")
        .wants_db_password()
        .annotate("kvinject.io/secrets", "x")
        .annotate("kvinject.io/inject", "yes")
        .build();
    let plan = inject(&pod, &facts());
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("unknown annotation kvinject.io/secrets")),
        "{:?}",
        plan.warnings
    );
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("\"yes\" means nothing")),
        "{:?}",
        plan.warnings
    );
}

#[test]
fn every_object_is_a_file_named_by_alias_or_var() {
    let pod = pod()
        .container("app")
        .wants_db_password()
        .annotate("kvinject.io/env.DB_PASSWORD_COPY", "db-password")
        .annotate("kvinject.io/env.API_KEY", "api-key")
        .annotate("kvinject.io/file.api.key", "api-key")
        .annotate(
            "kvinject.io/file.ca.pem",
            "cert/root-ca?format=pem&mode=0444",
        )
        .build();
    let plan = inject(&pod, &facts());
    let aliases: Vec<(String, String)> = objects(&plan)
        .iter()
        .map(|o| {
            (
                o["objectAlias"].as_str().unwrap().to_owned(),
                o["objectName"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        aliases,
        [
            ("DB_PASSWORD", "db-password"),
            ("api.key", "api-key"),
            ("ca.pem", "root-ca")
        ]
        .map(|(a, n)| (a.to_owned(), n.to_owned())),
        "sorted by alias; an env var shares the file of its object"
    );
    let ca = &objects(&plan)[2];
    assert_eq!(ca["objectType"], "cert");
    assert_eq!(ca["objectFormat"], "pem");
    assert_eq!(ca["filePermission"], "0444");
    let data = &spc_of(&plan)["spec"]["secretObjects"][0]["data"];
    assert_eq!(
        data,
        &json!([
            {"objectName": "api.key", "key": "API_KEY"},
            {"objectName": "DB_PASSWORD", "key": "DB_PASSWORD"},
            {"objectName": "DB_PASSWORD", "key": "DB_PASSWORD_COPY"},
        ])
    );
}

#[test]
fn one_file_name_for_two_objects_is_a_conflict() {
    let pod = pod()
        .container("app")
        .wants_db_password()
        .annotate("kvinject.io/file.DB_PASSWORD", "other-secret")
        .build();
    let message = deny(&pod, &facts());
    assert!(
        message.contains("annotation kvinject.io/env.DB_PASSWORD"),
        "{message}"
    );
    assert!(
        message.contains("kvinject.io/file.DB_PASSWORD mounts secret/other-secret"),
        "{message}"
    );
    let same = pod_same_object();
    inject(&same, &facts());
}

fn pod_same_object() -> Value {
    pod()
        .container("app")
        .wants_db_password()
        .annotate("kvinject.io/file.DB_PASSWORD", "secret/db-password")
        .build()
}

// ---- Section 4: what kvinject writes ----

#[test]
fn generate_mode_writes_volume_mounts_env_marker_and_spc() {
    let pod = pod()
        .container("app")
        .container("sidecar")
        .wants_db_password()
        .build();
    let plan = inject(&pod, &facts());
    let spc = spc_of(&plan);
    let name = plan.spc_names()[0].to_owned();
    assert!(
        name.starts_with("kvinject-") && name.len() == "kvinject-".len() + 20,
        "{name}"
    );
    assert_eq!(spc["metadata"]["name"], name.as_str());
    assert_eq!(spc["metadata"]["namespace"], NS);
    assert_eq!(
        spc["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "kvinject"
    );
    assert_eq!(spc["spec"]["provider"], "azure");
    let parameters = &spc["spec"]["parameters"];
    assert_eq!(parameters["keyvaultName"], "shop-kv");
    assert_eq!(parameters["tenantId"], TENANT);
    assert_eq!(parameters["clientID"], CLIENT);
    assert!(parameters.get("usePodIdentity").is_none());
    assert_eq!(spc["spec"]["secretObjects"][0]["secretName"], name.as_str());
    assert_eq!(spc["spec"]["secretObjects"][0]["type"], "Opaque");

    let patched = apply(&pod, &plan.patch);
    assert_eq!(
        patched["spec"]["volumes"],
        json!([{"name": "kvinject-secrets", "csi": {"driver": "secrets-store.csi.k8s.io", "readOnly": true,
            "volumeAttributes": {"secretProviderClass": name}}}])
    );
    for container in patched["spec"]["containers"].as_array().unwrap() {
        assert_eq!(
            container["volumeMounts"],
            json!([{"name": "kvinject-secrets", "mountPath": "/mnt/secrets-store", "readOnly": true}])
        );
        assert_eq!(
            container["env"],
            json!([{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": name, "key": "DB_PASSWORD"}}}])
        );
    }
    assert_eq!(
        patched["metadata"]["annotations"]["kvinject.io/injected"],
        name.as_str()
    );
}

#[test]
fn same_annotations_give_the_same_spc_in_any_order() {
    let a = pod()
        .container("app")
        .wants_db_password()
        .annotate("kvinject.io/file.x", "x")
        .build();
    let b = pod()
        .container("other")
        .annotate("kvinject.io/file.x", "secret/x")
        .annotate("kvinject.io/env.DB_PASSWORD", "db-password")
        .annotate("kvinject.io/tenant-id", TENANT)
        .annotate("kvinject.io/vault", "shop-kv")
        .build();
    assert_eq!(
        inject(&a, &facts()).spc_names(),
        inject(&b, &facts()).spc_names()
    );
    let c = pod()
        .container("app")
        .wants_db_password()
        .annotate("kvinject.io/file.x", "x@0123456789abcdef0123456789abcdef")
        .build();
    assert_ne!(
        inject(&a, &facts()).spc_names(),
        inject(&c, &facts()).spc_names()
    );
}

#[test]
fn an_unlabelled_spc_with_the_generated_name_is_never_taken_over() {
    let plan = inject(
        &pod().container("app").wants_db_password().build(),
        &facts(),
    );
    let mut squatter = plan.generated_spcs[0].manifest();
    squatter["metadata"]["labels"] = json!({});
    let message = deny(
        &pod().container("app").wants_db_password().build(),
        &facts_with(&[squatter]),
    );
    assert!(
        message.contains(&format!(
            "SecretProviderClass {} in namespace shop exists but is not labelled",
            plan.spc_names()[0]
        )),
        "{message}"
    );
    let ours = plan.generated_spcs[0].manifest();
    inject(
        &pod().container("app").wants_db_password().build(),
        &facts_with(&[ours]),
    );
}

fn hand_spc(client_id: &str) -> Value {
    json!({"apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
    "metadata": {"name": "hand", "namespace": NS},
    "spec": {"provider": "azure", "parameters": {"keyvaultName": "kv1", "clientID": client_id,
        "tenantId": TENANT, "objects": "array: []"},
        "secretObjects": [
            {"secretName": "db", "type": "Opaque", "data": [{"objectName": "p", "key": "password"}, {"objectName": "u", "key": "user"}]},
            {"secretName": "cache", "type": "Opaque", "data": [{"objectName": "c", "key": "password"}]},
        ]}})
}

#[test]
fn reference_mode_wires_the_named_spc_and_its_keys() {
    let facts = facts_with(&[hand_spc(CLIENT)]);
    let pod = pod()
        .container("app")
        .annotate("kvinject.io/secret-provider-class", "hand")
        .annotate("kvinject.io/env.DB_USER", "user")
        .annotate("kvinject.io/env.CACHE_PASSWORD", "cache/password")
        .annotate("kvinject.io/vault", "ignored-kv")
        .build();
    let plan = inject(&pod, &facts);
    assert!(plan.generated_spcs.is_empty());
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("annotation kvinject.io/vault is unused")),
        "{:?}",
        plan.warnings
    );
    let patched = apply(&pod, &plan.patch);
    assert_eq!(
        patched["spec"]["volumes"][0]["csi"]["volumeAttributes"]["secretProviderClass"],
        "hand"
    );
    assert_eq!(
        patched["metadata"]["annotations"]["kvinject.io/injected"],
        "hand"
    );
    assert_eq!(
        patched["spec"]["containers"][0]["env"],
        json!([
            {"name": "CACHE_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "cache", "key": "password"}}},
            {"name": "DB_USER", "valueFrom": {"secretKeyRef": {"name": "db", "key": "user"}}},
        ])
    );
}

#[test]
fn reference_mode_refusals() {
    let facts = facts_with(&[hand_spc(CLIENT)]);
    let base = pod()
        .container("app")
        .annotate("kvinject.io/secret-provider-class", "hand");
    let cases: Vec<(Value, &str)> = vec![
        (
            base.clone().annotate("kvinject.io/file.x", "db").build(),
            "annotation kvinject.io/file.x: file annotations cannot be used",
        ),
        (
            base.clone()
                .annotate("kvinject.io/env.P", "password")
                .build(),
            "several Secrets",
        ),
        (
            base.clone().annotate("kvinject.io/env.P", "token").build(),
            "syncs no key \"token\"; it syncs [db/password, db/user, cache/password]",
        ),
        (
            base.clone()
                .annotate("kvinject.io/env.P", "db/token")
                .build(),
            "syncs no key \"db/token\"",
        ),
        (
            pod()
                .container("app")
                .annotate("kvinject.io/secret-provider-class", "missing")
                .build(),
            "SecretProviderClass missing does not exist in namespace shop",
        ),
    ];
    for (pod, expected) in cases {
        let message = deny(&pod, &facts);
        assert!(message.contains(expected), "{expected}: {message}");
    }
    let theirs = facts_with(&[hand_spc(OTHER_CLIENT)]);
    let message = deny(&base.clone().build(), &theirs);
    assert!(
        message.contains(&format!(
            "authenticates as workload identity {OTHER_CLIENT}"
        )),
        "{message}"
    );
    let mut vm = hand_spc(CLIENT);
    vm["spec"]["parameters"] = json!({"useVMManagedIdentity": "true", "keyvaultName": "kv1"});
    let message = deny(&base.clone().build(), &facts_with(&[vm]));
    assert!(message.contains("useVMManagedIdentity"), "{message}");
    // Mount only: a reference with no env annotation is valid.
    inject(&base.build(), &facts);
}

#[test]
fn reference_spcs_are_read_as_the_azure_provider_reads_them() {
    let workload = pod()
        .container("app")
        .annotate("kvinject.io/secret-provider-class", "hand");
    let legacy = workload
        .clone()
        .label("aadpodidbinding", "shop-id")
        .service_account("plain");
    let legacy_facts =
        |spc: Value| facts_with(&[spc, binding("shop-id"), service_account("plain", None)]);
    let with = |parameters: Value| {
        let mut spc = hand_spc(CLIENT);
        for (key, value) in parameters.as_object().unwrap() {
            spc["spec"]["parameters"][key] = value.clone();
        }
        spc
    };
    // Two identities: the provider would not authenticate as the pod. Both are named.
    for (extra, named) in [
        (
            json!({"useVMManagedIdentity": "true"}),
            "useVMManagedIdentity and clientID",
        ),
        (
            json!({"usePodIdentity": "True"}),
            "usePodIdentity and clientID",
        ),
        (
            json!({"usePodIdentity": "1", "useVMManagedIdentity": "t"}),
            "usePodIdentity and useVMManagedIdentity and clientID",
        ),
    ] {
        let message = deny(&workload.clone().build(), &facts_with(&[with(extra)]));
        assert!(
            message.contains(&format!("more than one identity ({named})")),
            "{message}"
        );
    }
    // Go's ParseBool: "1", "T", " true " are true; "yes" fails the mount.
    for truthy in ["1", "T", " true ", "TRUE"] {
        let mut spc = with(json!({"usePodIdentity": truthy}));
        spc["spec"]["parameters"]
            .as_object_mut()
            .unwrap()
            .remove("clientID");
        inject(&legacy.clone().build(), &legacy_facts(spc));
    }
    let message = deny(
        &workload.clone().build(),
        &facts_with(&[with(json!({"useVMManagedIdentity": "yes"}))]),
    );
    assert!(
        message.contains("useVMManagedIdentity: \"yes\", which the Azure provider cannot read"),
        "{message}"
    );
    // "false", "0" and "" name no identity: clientID alone is workload identity.
    inject(
        &workload.clone().build(),
        &facts_with(&[with(
            json!({"usePodIdentity": "false", "useVMManagedIdentity": "0"}),
        )]),
    );
    inject(
        &workload.build(),
        &facts_with(&[with(json!({"usePodIdentity": ""}))]),
    );
}

#[test]
fn namespaces_and_the_server_narrow_the_vaults_pods_may_use() {
    let guarded = |list: &str| {
        facts_with(&[
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS,
            "labels": {"kvinject.io/injection": "enabled"},
            "annotations": {"kvinject.io/allowed-vaults": list}}}),
        ])
    };
    let wants = |vault: &str| {
        pod()
            .container("app")
            .wants_db_password()
            .annotate("kvinject.io/vault", vault)
            .build()
    };
    let message = deny(&wants("other-kv"), &guarded("team-kv, shared-kv"));
    assert!(
        message.contains(
            "annotation kvinject.io/vault: Key Vault other-kv is not among the vaults namespace shop's \
             annotation kvinject.io/allowed-vaults allows ([team-kv, shared-kv])"
        ),
        "{message}"
    );
    // Vault names are DNS labels: no case.
    inject(&wants("Shared-KV"), &guarded("team-kv, shared-kv"));
    // The server's list holds even where the namespace allows the vault.
    let mut server = settings();
    server.allowed_vaults = Some(vec!["team-kv".to_owned()]);
    let denial = kvinject::core::plan::plan_pod(
        &kvinject::core::node::Node::from(&wants("shared-kv")),
        NS,
        &guarded("shared-kv"),
        &server,
    )
    .map(|_| ())
    .unwrap_err();
    assert_eq!(denial.reason(), DenialReason::Namespace);
    assert!(
        denial
            .message()
            .contains("the server's --allowed-vaults allows ([team-kv])"),
        "{denial}"
    );
    // Reference mode: the SPC's keyvaultName is held to the same lists.
    let mut spc = hand_spc(CLIENT);
    spc["spec"]["parameters"]["keyvaultName"] = json!("other-kv");
    let mut facts = vec![spc];
    facts.push(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS,
        "labels": {"kvinject.io/injection": "enabled"},
        "annotations": {"kvinject.io/allowed-vaults": "team-kv"}}}),
    );
    let referenced = pod()
        .container("app")
        .annotate("kvinject.io/secret-provider-class", "hand")
        .build();
    let message = deny(&referenced, &facts_with(&facts));
    assert!(
        message.contains("annotation kvinject.io/secret-provider-class (SecretProviderClass hand): Key Vault other-kv is not among"),
        "{message}"
    );
}

#[test]
fn a_protected_binding_cannot_be_claimed_from_another_namespace() {
    use kvinject::core::identity::{self, BindingScope};
    use kvinject::core::pod::PodView;
    let protected = |allowed: &str| {
        json!({"apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzureIdentityBinding",
            "metadata": {"name": "payments-binding", "namespace": "ops",
                "annotations": {"kvinject.io/allowed-service-accounts": allowed}},
            "spec": {"azureIdentity": "payments-id", "selector": "payments"}})
    };
    let claimer = pod()
        .container("app")
        .wants_db_password()
        .label("aadpodidbinding", "payments")
        .service_account("plain");
    let facts = |allowed: &str| facts_with(&[protected(allowed), service_account("plain", None)]);
    // A bare name means the binding's own namespace: ops/payments, not shop/payments.
    let message = deny(
        &claimer.clone().service_account("payments").build(),
        &facts("payments"),
    );
    assert!(
        message.contains("claims AzureIdentityBinding ops/payments-binding")
            && message.contains("runs as ServiceAccount shop/payments"),
        "{message}"
    );
    // namespace/name lets a pod of another namespace in, by name.
    inject(&claimer.clone().build(), &facts("payments, shop/plain"));
    // The policy route sees the same.
    let pod = claimer.clone().build();
    let pod = kvinject::core::node::Node::from(&pod);
    let view = PodView::new(&pod).unwrap();
    let refused = identity::check_pod_identity_policy(
        &view,
        NS,
        &facts("payments"),
        BindingScope::EveryNamespace,
    );
    assert!(refused.is_err());
    // With forceNamespaced, a binding of another namespace is not the pod's at all.
    let mut namespaced = settings();
    namespaced.binding_scope = BindingScope::PodNamespace;
    let denial = kvinject::core::plan::plan_pod(&pod, NS, &facts("payments"), &namespaced)
        .map(|_| ())
        .unwrap_err();
    assert!(
        denial
            .message()
            .contains("matches no AzureIdentityBinding in namespace shop"),
        "{denial}"
    );
    assert!(
        identity::check_pod_identity_policy(
            &view,
            NS,
            &facts("payments"),
            BindingScope::PodNamespace
        )
        .is_ok()
    );
}

// ---- Section 5: identity ----

#[test]
fn identity_chain() {
    let base = pod().container("app").wants_db_password();
    let legacy = base
        .clone()
        .label("aadpodidbinding", "shop-id")
        .service_account("plain");
    let plain_sa = service_account("plain", None);

    // AAD Pod Identity: the binding must exist.
    let plan = inject(
        &legacy.clone().build(),
        &facts_with(&[binding("shop-id"), plain_sa.clone()]),
    );
    assert_eq!(
        spc_of(&plan)["spec"]["parameters"]["usePodIdentity"],
        "true"
    );
    assert!(
        spc_of(&plan)["spec"]["parameters"]
            .get("clientID")
            .is_none()
    );
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("deprecated") && w.contains("Workload Identity")),
        "{:?}",
        plan.warnings
    );
    let message = deny(
        &legacy.clone().build(),
        &facts_with(&[binding("other"), plain_sa.clone()]),
    );
    assert!(
        message.contains(
            "label aadpodidbinding: shop-id matches no AzureIdentityBinding in any namespace"
        ),
        "{message}"
    );

    let cases: Vec<(&str, Value, Vec<Value>, &str)> = vec![
        (
            "both",
            base.clone().label("aadpodidbinding", "shop-id").build(),
            vec![binding("shop-id")],
            "two Azure identities",
        ),
        (
            "neither",
            base.clone().service_account("plain").build(),
            vec![plain_sa.clone()],
            "has no Azure identity",
        ),
        (
            "unknown sa",
            base.clone().service_account("ghost").build(),
            vec![],
            "has no Azure identity: its ServiceAccount ghost does not exist in namespace shop",
        ),
        (
            "client-id not carried",
            base.clone()
                .service_account("plain")
                .annotate("kvinject.io/client-id", CLIENT)
                .build(),
            vec![plain_sa.clone()],
            "carries no azure.workload.identity/client-id",
        ),
        (
            "client-id of another",
            base.clone()
                .annotate("kvinject.io/client-id", OTHER_CLIENT)
                .build(),
            vec![],
            "a pod cannot name a client ID its ServiceAccount does not carry",
        ),
        (
            "client-id not a guid",
            base.clone().annotate("kvinject.io/client-id", "me").build(),
            vec![],
            "annotation kvinject.io/client-id: \"me\" is not a client ID",
        ),
        (
            "sa annotation not a guid",
            base.clone().service_account("odd").build(),
            vec![service_account("odd", Some("xyz"))],
            "which is not a client ID",
        ),
    ];
    for (name, pod, extra, expected) in cases {
        let message = deny(&pod, &facts_with(&extra));
        assert!(message.contains(expected), "{name}: {message}");
    }
    // The same client ID named on the pod is fine (case-insensitively).
    let plan = inject(
        &base
            .clone()
            .annotate("kvinject.io/client-id", &CLIENT.to_uppercase())
            .build(),
        &facts(),
    );
    assert_eq!(spc_of(&plan)["spec"]["parameters"]["clientID"], CLIENT);
    // The serviceAccountName default is `default`.
    let plan = inject(
        &base.remove("/spec/serviceAccountName").build(),
        &facts_with(&[service_account("default", Some(OTHER_CLIENT))]),
    );
    assert_eq!(
        spc_of(&plan)["spec"]["parameters"]["clientID"],
        OTHER_CLIENT
    );
}

// ---- Section 6: behaviour rules ----

#[test]
fn a_second_pass_is_empty_and_later_containers_still_get_wired() {
    let facts = facts();
    let pod = pod()
        .container("app")
        .wants_db_password()
        .annotate("kvinject.io/file.tls.crt", "cert/tls")
        .build();
    let plan = inject(&pod, &facts);
    let patched = apply(&pod, &plan.patch);
    let again = inject(&patched, &facts);
    assert!(again.patch.is_empty(), "second pass: {:?}", again.patch);
    assert_eq!(again.spc_names(), plan.spc_names());

    // Another webhook appended a container after kvinject ran (reinvocation).
    let mut grown = patched.clone();
    grown["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "late", "image": "x"}));
    let third = inject(&grown, &facts);
    let paths = paths_of(&third);
    assert_eq!(
        paths,
        ["/spec/containers/1/volumeMounts", "/spec/containers/1/env"]
    );
    assert!(
        inject(&apply(&grown, &third.patch), &facts)
            .patch
            .is_empty()
    );
}

fn paths_of(plan: &InjectionPlan) -> Vec<String> {
    let operations = plan.patch.operations().unwrap();
    operations.iter().map(path_of).collect()
}

fn path_of(op: &PatchOperation) -> String {
    match op {
        PatchOperation::Add(add) => add.path.to_string(),
        other => panic!("kvinject only adds: {other:?}"),
    }
}

#[test]
fn conflicts_are_denied_naming_the_entry() {
    let facts = facts();
    let base = pod().container("app").wants_db_password();
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "foreign volume",
            base.clone().set("/spec/volumes", json!([{"name": "kvinject-secrets", "emptyDir": {}}])).build(),
            "pod already has a volume named kvinject-secrets",
        ),
        (
            "env var",
            base.clone().set("/spec/containers/0/env", json!([{"name": "DB_PASSWORD", "value": "hunter2"}])).build(),
            "annotation kvinject.io/env.DB_PASSWORD: container app already defines env var DB_PASSWORD",
        ),
        (
            "env var from another secret",
            base.clone()
                .set("/spec/containers/0/env", json!([{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "x", "key": "DB_PASSWORD"}}}]))
                .build(),
            "already defines env var DB_PASSWORD",
        ),
        (
            "mount path",
            base.clone().set("/spec/containers/0/volumeMounts", json!([{"name": "data", "mountPath": "/mnt/secrets-store/"}])).build(),
            "container app already mounts volume data at /mnt/secrets-store",
        ),
        (
            "our volume elsewhere",
            base.clone().set("/spec/containers/0/volumeMounts", json!([{"name": "kvinject-secrets", "mountPath": "/elsewhere"}])).build(),
            "container app already mounts volume kvinject-secrets at /elsewhere",
        ),
    ];
    for (name, pod, expected) in cases {
        let message = deny(&pod, &facts);
        assert!(message.contains(expected), "{name}: {message}");
    }
}

#[test]
fn absent_arrays_and_maps_are_created_and_present_ones_appended() {
    let facts = facts();
    let bare = pod().container("app").wants_db_password().build();
    let plan = inject(&bare, &facts);
    let paths = paths_of(&plan);
    assert_eq!(
        paths,
        [
            "/spec/volumes",
            "/spec/containers/0/volumeMounts",
            "/spec/containers/0/env",
            "/metadata/annotations/kvinject.io~1injected"
        ]
    );
    let full = pod()
        .container("app")
        .wants_db_password()
        .set("/spec/volumes", json!([{"name": "data", "emptyDir": {}}]))
        .set(
            "/spec/containers/0/volumeMounts",
            json!([{"name": "data", "mountPath": "/data"}]),
        )
        .set(
            "/spec/containers/0/env",
            json!([{"name": "MODE", "value": "prod"}]),
        )
        .build();
    let plan = inject(&full, &facts);
    let paths = paths_of(&plan);
    assert_eq!(
        paths,
        [
            "/spec/volumes/-",
            "/spec/containers/0/volumeMounts/-",
            "/spec/containers/0/env/-",
            "/metadata/annotations/kvinject.io~1injected"
        ]
    );
    let patched = apply(&full, &plan.patch);
    assert_eq!(
        patched["spec"]["containers"][0]["env"][0]["name"], "MODE",
        "existing entries stay first"
    );
}

#[test]
fn the_patch_text_is_what_json_patch_writes_even_for_text_that_needs_escaping() {
    // The marker's key goes through pointer escaping (`/` as `~1`); a mount path may hold quotes,
    // backslashes, control characters, `~` and U+2028, which only JSON escaping may touch.
    let path = "/mnt/\"q\" \\b\t~0~1 \u{2028} \u{1}/x";
    let pod = pod()
        .container("app")
        .wants_db_password()
        .annotate("kvinject.io/mount-path", path)
        .build();
    let plan = inject(&pod, &facts());
    let operations = plan.patch.operations().unwrap();
    let marker = serde_json::to_value(operations.last().unwrap()).unwrap();
    assert_eq!(
        marker["path"],
        "/metadata/annotations/kvinject.io~1injected"
    );
    assert_eq!(
        serde_json::to_string(&operations).unwrap(),
        plan.patch.as_str()
    );
    let patched = apply(&pod, &plan.patch);
    assert_eq!(
        patched["spec"]["containers"][0]["volumeMounts"][0]["mountPath"],
        path
    );
    assert!(
        patched["metadata"]["annotations"]
            .get("kvinject.io/injected")
            .is_some()
    );
}

#[test]
fn unknown_fields_survive_and_are_never_touched() {
    let pod = pod()
        .container("app")
        .wants_db_password()
        .set("/spec/futureField", json!({"nested": [1, 2, {"x": null}]}))
        .set("/spec/containers/0/futureContainerField", json!("keep"))
        .set("/metadata/futureMeta", json!(true))
        .build();
    let plan = inject(&pod, &facts());
    let patched = apply(&pod, &plan.patch);
    assert_eq!(patched["spec"]["futureField"], pod["spec"]["futureField"]);
    assert_eq!(
        patched["spec"]["containers"][0]["futureContainerField"],
        "keep"
    );
    assert_eq!(patched["metadata"]["futureMeta"], true);
    for op in &plan.patch.operations().unwrap() {
        assert!(matches!(op, PatchOperation::Add(_)), "only add: {op:?}");
    }
}

#[test]
fn init_containers_and_native_sidecars_only_when_named() {
    let facts = facts();
    let base = pod()
        .container("app")
        .init_container("migrate", false)
        .init_container("proxy", true)
        .wants_db_password();
    let plan = inject(&base.clone().build(), &facts);
    let patched = apply(&base.clone().build(), &plan.patch);
    for init in patched["spec"]["initContainers"].as_array().unwrap() {
        assert!(
            init.get("env").is_none() && init.get("volumeMounts").is_none(),
            "{init}"
        );
    }
    let named = base
        .annotate("kvinject.io/containers", "proxy, app")
        .build();
    let plan = inject(&named, &facts);
    let patched = apply(&named, &plan.patch);
    assert!(
        patched["spec"]["initContainers"][0].get("env").is_none(),
        "unnamed init container untouched"
    );
    let proxy = &patched["spec"]["initContainers"][1];
    assert_eq!(
        proxy["restartPolicy"], "Always",
        "native sidecar keeps its restartPolicy"
    );
    assert_eq!(proxy["env"][0]["name"], "DB_PASSWORD");
    assert_eq!(proxy["volumeMounts"][0]["name"], "kvinject-secrets");
    assert_eq!(
        patched["spec"]["containers"][0]["env"][0]["name"],
        "DB_PASSWORD"
    );
}

#[test]
fn fifty_containers_all_wired_once() {
    let mut builder = pod()
        .wants_db_password()
        .annotate("kvinject.io/env.API_KEY", "api-key");
    for i in 0..50 {
        builder = builder.container(&format!("c{i}"));
    }
    let pod = builder.build();
    let plan = inject(&pod, &facts());
    assert_eq!(plan.patch.len(), 1 + 50 * 2 + 1);
    let patched = apply(&pod, &plan.patch);
    for container in patched["spec"]["containers"].as_array().unwrap() {
        assert_eq!(container["env"].as_array().unwrap().len(), 2);
        assert_eq!(container["volumeMounts"].as_array().unwrap().len(), 1);
    }
    assert!(inject(&patched, &facts()).patch.is_empty());
}

#[test]
fn work_per_pod_is_bounded_and_a_pod_over_a_limit_is_denied_naming_it() {
    let limits = Settings::new(None, None, "kvinject").limits;
    let deny_with = |pod: &Value, settings: &Settings| {
        kvinject::core::plan::plan_pod(
            &kvinject::core::node::Node::from(pod),
            NS,
            &facts(),
            settings,
        )
        .map(|_| ())
        .unwrap_err()
    };
    // One object over the limit.
    let mut many = pod().container("app").wants_db_password();
    for i in 0..limits.max_objects {
        many = many.annotate(&format!("kvinject.io/env.V{i}"), &format!("s-{i}"));
    }
    let denial = deny_with(&many.build(), &settings());
    assert_eq!(denial.reason(), DenialReason::Limit);
    assert!(
        denial.message().contains(&format!(
            "pod needs {} Key Vault objects (env., file. and tls-secret. annotations), over the limit of {} (--max-objects-per-pod)",
            limits.max_objects + 1,
            limits.max_objects
        )),
        "{denial}"
    );
    // One vault over the limit: each is an SPC write, a volume and Key Vault requests.
    let mut vaults = pod().container("app").wants_db_password();
    for i in 0..limits.max_vaults {
        vaults = vaults.annotate(
            &format!("kvinject.io/env.V{i}"),
            &format!("s?vault=team-kv-{i}"),
        );
    }
    let denial = deny_with(&vaults.build(), &settings());
    assert_eq!(denial.reason(), DenialReason::Limit);
    assert!(
        denial.message().contains(&format!(
            "pod needs {} Key Vaults (the pod's and those named by ?vault=), over the limit of {} (--max-vaults-per-pod)",
            limits.max_vaults + 1,
            limits.max_vaults
        )),
        "{denial}"
    );
    // One container over the limit.
    let mut wide = pod().wants_db_password();
    for i in 0..=limits.max_target_containers {
        wide = wide.container(&format!("c{i}"));
    }
    let denial = deny_with(&wide.build(), &settings());
    assert!(
        denial
            .message()
            .contains("target containers, over the limit of 100 (--max-target-containers)"),
        "{denial}"
    );
    // The patch: a small limit makes an ordinary pod too large, and says so.
    let mut tight = settings();
    tight.limits.max_patch_bytes = 200;
    let denial = deny_with(&pod().container("app").wants_db_password().build(), &tight);
    assert!(
        denial
            .message()
            .contains("bytes of JSON Patch, over the limit of 200 (--max-patch-bytes)"),
        "{denial}"
    );
    // Exactly at the limits is fine.
    let mut at = pod().container("app").wants_db_password();
    for i in 1..limits.max_objects {
        at = at.annotate(&format!("kvinject.io/env.V{i}"), &format!("s-{i}"));
    }
    inject(&at.build(), &facts());
}

#[test]
fn a_pod_of_200_containers_and_1000_objects_is_denied_before_any_work() {
    let mut huge = pod().wants_db_password();
    for i in 0..200 {
        huge = huge.container(&format!("c{i}"));
    }
    for i in 0..1000 {
        huge = huge.annotate(&format!("kvinject.io/env.V{i}"), &format!("s-{i}"));
    }
    let message = deny(&huge.build(), &facts());
    assert!(
        message.contains("pod needs 1001 Key Vault objects"),
        "{message}"
    );
}

#[test]
fn custom_mount_path_is_used_everywhere() {
    let pod = pod()
        .container("app")
        .wants_db_password()
        .annotate("kvinject.io/mount-path", "/etc/app/secrets")
        .build();
    let patched = apply(&pod, &inject(&pod, &facts()).patch);
    assert_eq!(
        patched["spec"]["containers"][0]["volumeMounts"][0]["mountPath"],
        "/etc/app/secrets"
    );
}

#[test]
fn a_pod_without_containers_is_denied() {
    let message = deny(&pod().wants_db_password().build(), &facts());
    assert_eq!(message, "kvinject: pod has no containers to inject into");
}

#[test]
fn workload_metadata_annotations_warn() {
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d", "annotations": {"kvinject.io/env.A": "a"}, "labels": {"kvinject.io/inject": "true"}},
        "spec": {"template": {"metadata": {}, "spec": {"containers": []}}}});
    let warnings = kvinject::core::plan::workload_warnings(
        &kvinject::core::node::Node::from(&deployment),
        "Deployment.spec.template",
    );
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].contains(
            "kvinject.io/inject, kvinject.io/env.A on the Deployment's own metadata have no effect"
        ),
        "{warnings:?}"
    );
    assert!(warnings[0].contains("Deployment.spec.template.metadata"));
}
