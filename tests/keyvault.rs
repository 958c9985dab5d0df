//! Key Vault object verification with the real Azure SDK client against a local HTTPS endpoint
//! that speaks the Key Vault REST API.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kvinject::core::plan::Settings;
use kvinject::core::reference::ObjectRef;
use kvinject::keyvault::{Checked, Finding, Verifier, VerifierSettings, VerifyMode};
use kvinject::webhook::listener::Limits;
use kvinject::webhook::review::Reviewer;
use support::keyvault::{Behaviour, KeyVaultDouble, TestCredential, attrs, now};
use support::webhook::{admit, fixture_facts, review as fixture};

const VAULTS: [&str; 5] = [
    "myvault",
    "shop-prod-kv",
    "platform-kv",
    "lockedvault",
    "slowvault",
];
const V1: &str = "0123456789abcdef0123456789abcdef";
const V2: &str = "fedcba9876543210fedcba9876543210";

async fn double() -> KeyVaultDouble {
    let kv = KeyVaultDouble::start(&VAULTS).await;
    let t = now();
    kv.add("myvault", "secrets", "db-password", V1, attrs(t - 100));
    kv.add(
        "myvault",
        "secrets",
        "disabled-secret",
        V1,
        support::keyvault::Attrs {
            enabled: false,
            ..attrs(t - 100)
        },
    );
    kv.add(
        "myvault",
        "secrets",
        "expired-secret",
        V1,
        support::keyvault::Attrs {
            exp: Some(t - 10),
            ..attrs(t - 100)
        },
    );
    kv.add(
        "myvault",
        "secrets",
        "future-secret",
        V1,
        support::keyvault::Attrs {
            nbf: Some(t + 3600),
            ..attrs(t - 100)
        },
    );
    // Five versions: three pages; the newest (enabled) on the last page, older ones disabled.
    for (i, version) in ["00", "01", "02", "03", "04"].iter().enumerate() {
        let enabled = i == 4;
        kv.add(
            "myvault",
            "secrets",
            "rotated",
            &format!("{version}{}", &V1[2..]),
            support::keyvault::Attrs {
                enabled,
                ..attrs(t - 1000 + i as i64)
            },
        );
    }
    kv.add("myvault", "keys", "signing", V1, attrs(t - 100));
    kv.add("myvault", "certificates", "tls", V1, attrs(t - 100));
    kv.add(
        "myvault",
        "certificates",
        "tls",
        V2,
        support::keyvault::Attrs {
            exp: Some(t - 5),
            ..attrs(t - 50)
        },
    );
    kv.add("shop-prod-kv", "secrets", "db-password", V1, attrs(t - 100));
    kv.add(
        "platform-kv",
        "secrets",
        "datadog-api-key",
        V1,
        attrs(t - 100),
    );
    kv.add(
        "shop-prod-kv",
        "certificates",
        "checkout-tls",
        V1,
        attrs(t - 100),
    );
    kv.behave("lockedvault", Behaviour::Status(403, None));
    kv.behave("slowvault", Behaviour::Slow(Duration::from_secs(5)));
    kv
}

fn verifier(kv: &KeyVaultDouble, deadline: Duration) -> Verifier {
    let settings = VerifierSettings {
        dns_suffix: kv.suffix(),
        deadline,
        ..VerifierSettings::default()
    };
    Verifier::new(Ok(Arc::new(TestCredential)), settings).with_transport(kv.transport(&VAULTS))
}

fn r(text: &str) -> ObjectRef {
    ObjectRef::parse(text).unwrap()
}

#[tokio::test]
async fn each_answer_about_an_object() {
    let kv = double().await;
    let verifier = verifier(&kv, Duration::from_secs(5));
    let cases: Vec<(String, Checked)> = vec![
        ("db-password".into(), Checked::Answered(Finding::Ok)),
        ("missing-secret".into(), Checked::Answered(Finding::Missing)),
        (
            "disabled-secret".into(),
            Checked::Answered(Finding::Disabled),
        ),
        ("rotated".into(), Checked::Answered(Finding::Ok)),
        (
            format!("rotated@00{}", &V1[2..]),
            Checked::Answered(Finding::Disabled),
        ),
        (format!("db-password@{V1}"), Checked::Answered(Finding::Ok)),
        (
            format!("db-password@{V2}"),
            Checked::Answered(Finding::VersionMissing),
        ),
        ("key/signing".into(), Checked::Answered(Finding::Ok)),
        (
            "key/missing-key".into(),
            Checked::Answered(Finding::Missing),
        ),
        (format!("cert/tls@{V1}"), Checked::Answered(Finding::Ok)),
    ];
    for (reference, expected) in &cases {
        let checked = verifier.check("myvault", &r(reference)).await;
        assert_eq!(&checked, expected, "{reference}");
    }
    assert!(matches!(
        verifier.check("myvault", &r("expired-secret")).await,
        Checked::Answered(Finding::Expired(_))
    ));
    assert!(matches!(
        verifier.check("myvault", &r("future-secret")).await,
        Checked::Answered(Finding::NotYetValid(_))
    ));
    // The latest certificate version (V2, created last) has expired.
    assert!(matches!(
        verifier.check("myvault", &r("cert/tls")).await,
        Checked::Answered(Finding::Expired(_))
    ));
    // Paging: "rotated" took three pages.
    let pages = kv
        .requests()
        .iter()
        .filter(|(_, p)| p.starts_with("/secrets/rotated/versions"))
        .count();
    assert!(pages >= 3, "followed nextLink: {pages}");
    assert!(
        kv.value_reads().is_empty(),
        "never asked for a value: {:?}",
        kv.value_reads()
    );
    // The first request of a client is the unauthenticated challenge probe.
    assert!(
        kv.requests()
            .iter()
            .all(|(_, p)| p.contains("api-version="))
    );
}

#[tokio::test]
async fn what_is_not_an_answer_is_never_a_denial() {
    let kv = double().await;
    kv.behave("myvault", Behaviour::Status(429, Some(30)));
    let verifier = verifier(&kv, Duration::from_millis(500));
    let Checked::Unverified(reason) = verifier.check("lockedvault", &r("anything")).await else {
        panic!("403 is not an answer")
    };
    assert!(reason.contains("Key Vault Reader"), "{reason}");
    let Checked::Unverified(reason) = verifier.check("myvault", &r("db-password")).await else {
        panic!("429 is not an answer")
    };
    assert!(reason.contains("throttling"), "{reason}");
    let started = Instant::now();
    let Checked::Unverified(reason) = verifier.check("slowvault", &r("anything")).await else {
        panic!("a timeout is not an answer")
    };
    assert!(reason.contains("no answer within"), "{reason}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the deadline holds: {:?}",
        started.elapsed()
    );
    // A slow vault costs the deadline once per TTL: the second check is answered from the cache.
    let started = Instant::now();
    assert!(matches!(
        verifier.check("slowvault", &r("anything")).await,
        Checked::Unverified(_)
    ));
    assert!(started.elapsed() < Duration::from_millis(100));
    assert!(kv.value_reads().is_empty());
}

#[tokio::test]
async fn answers_are_cached_so_the_second_admission_asks_nothing() {
    let kv = double().await;
    let verifier = verifier(&kv, Duration::from_secs(5));
    let references = vec![
        ("kvinject.io/env.DB".to_owned(), r("db-password")),
        ("kvinject.io/file.key".to_owned(), r("key/signing")),
        ("kvinject.io/env.GONE".to_owned(), r("missing-secret")),
    ];
    let first = verifier.verify("myvault", &references).await;
    assert_eq!(
        first.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
        ["ok", "ok", "missing"]
    );
    let asked = kv.requests().len();
    assert!(asked >= 3);
    let second = verifier.verify("myvault", &references).await;
    assert_eq!(second.len(), 3);
    assert_eq!(
        kv.requests().len(),
        asked,
        "the second time, nothing is asked"
    );
    let report = first[2].1.as_ref().unwrap();
    assert!(report.about_object);
    assert_eq!(
        report.denial.message(),
        "kvinject: annotation kvinject.io/env.GONE: secret missing-secret does not exist in Key Vault myvault; fix the name, or create it"
    );
}

fn webhook(verifier: Arc<Verifier>, mode: VerifyMode) -> Reviewer {
    let facts = fixture_facts();
    Reviewer::new(
        Arc::new(facts),
        Settings::new(None, None, "kvinject"),
        Limits::default(),
    )
    .with_verifier(verifier, mode)
}

#[tokio::test]
async fn warn_and_deny_through_the_webhook() {
    let kv = double().await;
    let verifier = Arc::new(verifier(&kv, Duration::from_secs(2)));
    // The fixture asks shop-prod-kv for db-password (exists), stripe-api-key@… (absent) and
    // cert/checkout-tls (exists).
    let review = fixture("patch-workload-identity");
    let cold = Instant::now();
    let denied = admit(
        &webhook(verifier.clone(), VerifyMode::Deny),
        "/mutate",
        &review,
    )
    .await;
    let cold = cold.elapsed();
    assert_eq!(denied["allowed"], false);
    assert_eq!(denied["status"]["code"], 403);
    let message = denied["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "kvinject: annotation kvinject.io/env.STRIPE_KEY: secret stripe-api-key does not exist"
        ),
        "{message}"
    );
    assert!(message.contains("Key Vault shop-prod-kv"), "{message}");
    let warm = Instant::now();
    let warned = admit(
        &webhook(verifier.clone(), VerifyMode::Warn),
        "/mutate",
        &review,
    )
    .await;
    let warm = warm.elapsed();
    assert_eq!(warned["allowed"], true);
    assert!(warned["patch"].is_array());
    let warnings = warned["warnings"].as_array().unwrap();
    assert!(
        warnings.iter().any(|w| w
            .as_str()
            .unwrap()
            .contains("secret stripe-api-key does not exist")),
        "{warnings:?}"
    );
    let off = admit(
        &webhook(verifier.clone(), VerifyMode::Off),
        "/mutate",
        &review,
    )
    .await;
    assert!(
        off["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| !w.as_str().unwrap().contains("stripe-api-key"))
    );
    eprintln!("admission latency with verification: cold cache {cold:?}, warm cache {warm:?}");

    // A vault that refuses kvinject: admitted with a warning, even in deny mode.
    let mut locked = review.clone();
    locked["request"]["object"]["metadata"]["annotations"]["kvinject.io/vault"] =
        "lockedvault".into();
    let response = admit(&webhook(verifier, VerifyMode::Deny), "/mutate", &locked).await;
    assert_eq!(response["allowed"], true, "{response}");
    assert!(
        response["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("could not verify"))
    );
    assert!(kv.value_reads().is_empty());
}

#[tokio::test]
async fn each_vault_of_a_pod_is_asked_about_its_own_objects() {
    let kv = double().await;
    let verifier = Arc::new(verifier(&kv, Duration::from_secs(2)));
    // shop-prod-kv holds db-password; platform-kv holds datadog-api-key but not cert/internal-ca.
    let review = fixture("patch-two-vaults");
    let denied = admit(&webhook(verifier, VerifyMode::Deny), "/mutate", &review).await;
    assert_eq!(denied["allowed"], false, "{denied}");
    let message = denied["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "kvinject: annotation kvinject.io/file.ca.pem: cert internal-ca does not exist"
        ) && message.contains("Key Vault platform-kv"),
        "{message}"
    );
    assert!(
        !message.contains("DB_PASSWORD") && !message.contains("DATADOG_KEY"),
        "the objects that exist in their vaults are no finding: {message}"
    );
    let asked: Vec<(String, String)> = kv.requests();
    for (vault, object) in [
        ("shop-prod-kv", "db-password"),
        ("platform-kv", "datadog-api-key"),
        ("platform-kv", "internal-ca"),
    ] {
        assert!(
            asked
                .iter()
                .any(|(v, path)| v == vault && path.contains(object)),
            "{vault} asked about {object}: {asked:?}"
        );
    }
    assert!(
        !asked
            .iter()
            .any(|(v, path)| v == "shop-prod-kv" && path.contains("datadog")),
        "{asked:?}"
    );
}

#[tokio::test]
async fn the_same_modes_through_inject() {
    let kv = double().await;
    let verifier = verifier(&kv, Duration::from_secs(2));
    let text = std::fs::read("examples/workload-identity.yaml").unwrap();
    let documents = kvinject::offline::manifest::parse(
        &text,
        kvinject::offline::manifest::Format::Yaml,
        "example",
    )
    .unwrap();
    let injected = kvinject::offline::inject::inject(
        documents,
        "default",
        &Settings::new(None, None, "kvinject"),
    )
    .unwrap();
    assert_eq!(injected.objects.len(), 1);
    let mut out = Vec::new();
    let errors = kvinject::cli::report_verification(
        &verifier,
        &injected.objects,
        VerifyMode::Deny,
        &mut out,
    )
    .await;
    let text = String::from_utf8(out).unwrap();
    assert_eq!(errors, 1, "{text}");
    assert!(
        text.starts_with(
            "Error: Deployment/checkout: kvinject: annotation kvinject.io/env.STRIPE_KEY"
        ),
        "{text}"
    );
    let mut out = Vec::new();
    let errors = kvinject::cli::report_verification(
        &verifier,
        &injected.objects,
        VerifyMode::Warn,
        &mut out,
    )
    .await;
    assert_eq!(errors, 0);
    assert!(
        String::from_utf8(out)
            .unwrap()
            .starts_with("Warning: Deployment/checkout:")
    );
}

#[tokio::test]
async fn verification_never_asks_about_a_vault_the_server_does_not_allow() {
    let kv = double().await;
    let verifier = Arc::new(verifier(&kv, Duration::from_secs(2)));
    let mut settings = Settings::new(None, None, "kvinject");
    settings.allowed_vaults = Some(vec!["team-kv".to_owned()]);
    let webhook = Reviewer::new(Arc::new(fixture_facts()), settings, Limits::default())
        .with_verifier(verifier, VerifyMode::Deny);
    // The fixture names shop-prod-kv, which exists in the test vault: not an oracle on it.
    let asked = kv.requests().len();
    let denied = admit(&webhook, "/mutate", &fixture("patch-workload-identity")).await;
    assert_eq!(denied["allowed"], false);
    let message = denied["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("Key Vault shop-prod-kv is not among the vaults the server's --allowed-vaults allows ([team-kv])"),
        "{message}"
    );
    assert_eq!(kv.requests().len(), asked, "Key Vault was not asked");
}
