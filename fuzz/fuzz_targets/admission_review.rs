//! Arbitrary bytes as an AdmissionReview body: decoding, answering on every route and encoding
//! the answer must never panic, whatever arrives; the fast read and serde_json's give the same
//! request or the same error; and the object read pruned gets exactly the answer it gets read
//! whole.
#![no_main]

use std::sync::LazyLock;

use kvinject::core::facts::DocumentFacts;
use kvinject::core::plan::Settings;
use kvinject::offline::manifest::{self, Format};
use kvinject::webhook::admission::{self, Route};
use kvinject::webhook::memo::{ObjectTexts, PlanMemo};
use libfuzzer_sys::fuzz_target;

static FACTS: LazyLock<DocumentFacts> = LazyLock::new(|| {
    let yaml = include_bytes!("../../tests/fixtures/facts.yaml");
    let documents = manifest::parse(yaml, Format::Yaml, "facts.yaml").expect("the fixture parses");
    DocumentFacts::from_documents(&documents, "default")
});

static SETTINGS: LazyLock<Settings> = LazyLock::new(|| Settings::new(None, None, "kvinject"));

/// Object texts kept across inputs, so that each input's object is also looked for among the
/// objects of the inputs before it (and kept for those after it).
static MEMO: LazyLock<PlanMemo> = LazyLock::new(|| PlanMemo::new(64).expect("entries"));

fuzz_target!(|body: &[u8]| {
    let decoded = admission::decode(body);
    assert_eq!(
        format!("{decoded:?}"),
        format!("{:?}", admission::decode_by_serde(body)),
        "the fast read and serde_json's differ"
    );
    // The read that writes the object's key accepts and refuses the same bodies, and reads the
    // same object from the text it checked.
    let keyed = admission::decode_keyed(body, ObjectTexts::KEY_LIMIT);
    // From its key, not from the text again, whenever the key is within its limit.
    if let Some(key) = keyed.as_ref().ok().and_then(|decoded| decoded.kept_key()) {
        assert_eq!(
            key.tree(kvinject::core::pruned::KEPT).is_some(),
            key.bytes().is_some(),
            "a key within its limit does not read back"
        );
    }
    assert_eq!(
        format!("{keyed:?}"),
        format!("{decoded:?}"),
        "the keyed read and the fast read differ"
    );
    // An object taken by its text (kept from this input or an earlier one) decodes as read,
    // with the key its own read writes.
    let key = |decoded: &Result<admission::Decoded, _>| {
        let key = decoded.as_ref().ok().and_then(|decoded| decoded.kept_key());
        key.map(|key| key.bytes().map(<[u8]>::to_vec))
    };
    for _ in 0..2 {
        let recalled = admission::decode_recalling(body, &MEMO);
        assert_eq!(
            format!("{recalled:?}"),
            format!("{keyed:?}"),
            "the recalling read and the keyed read differ"
        );
        assert_eq!(key(&recalled), key(&keyed), "a recalled key differs");
    }
    let Ok(decoded) = decoded else {
        return;
    };
    // The tree reader refuses some bodies the pruned one skips through unread (nesting past 128
    // levels, numbers beyond f64): there is no whole answer to compare with then.
    let Ok(review) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    let whole = Some(kvinject::core::node::Node::from(
        &review["request"]["object"],
    ))
    .filter(|object| !object.is_null());
    let whole = admission::Decoded::new(decoded.request.clone(), whole);
    for route in [
        Route::Mutate,
        Route::ValidateWorkloads,
        Route::ValidatePodIdentity,
    ] {
        if let Ok(answer) = admission::answer(route, &decoded, &*FACTS, &SETTINGS) {
            let encoded = answer.encode();
            let whole_answer = admission::answer(route, &whole, &*FACTS, &SETTINGS)
                .expect("the whole object is answered when the pruned one is");
            assert_eq!(
                String::from_utf8_lossy(&encoded),
                String::from_utf8_lossy(&whole_answer.encode()),
                "pruned and whole objects get the same answer"
            );
            let response: serde_json::Value =
                serde_json::from_slice(&encoded).expect("the encoded answer is JSON");
            // Written again from the tree, the answer is the same bytes: no member twice (a
            // repeated one collapses in the tree), nothing but compact JSON.
            assert_eq!(
                serde_json::to_vec(&response).expect("a tree serialises"),
                encoded,
                "the encoded answer is compact JSON with no repeated member"
            );
            let response = &response["response"];
            assert_eq!(
                response["uid"].as_str(),
                Some(decoded.request.uid.as_ref()),
                "the answer's uid is the request's"
            );
            assert_eq!(
                response["allowed"].as_bool(),
                Some(answer.denial_message().is_none())
            );
            assert_eq!(
                response["status"]["message"].as_str(),
                answer.denial_message()
            );
            let warnings: Vec<&str> = response["warnings"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(serde_json::Value::as_str)
                .collect();
            assert_eq!(warnings, answer.warnings());
        }
    }
});
