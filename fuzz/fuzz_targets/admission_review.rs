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
    recalls_as_read(body, &keyed);
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

/// The recalling read of `body` and of its variants gives what the keyed read gives (`keyed`
/// for `body` itself), through a memo of its own (so that a failure reproduces from the input
/// alone): `body` read, then taken as remembered; its first half then the whole, so that a
/// remembered text may start a longer body; and, when `body`'s uid was read unescaped, `body`
/// with that uid's text replaced, as long, by other plain text (taken as remembered) and by
/// text that is not plain (an escape, a quote, a control character, a byte not UTF-8: read).
fn recalls_as_read(body: &[u8], keyed: &Result<admission::Decoded, admission::ReviewError>) {
    let key = |decoded: &Result<admission::Decoded, _>| {
        let key = decoded.as_ref().ok().and_then(|decoded| decoded.kept_key());
        key.map(|key| key.bytes().map(<[u8]>::to_vec))
    };
    let same = |memo: &PlanMemo, body: &[u8], keyed: &Result<admission::Decoded, _>| {
        let recalled = admission::decode_recalling(body, memo);
        assert_eq!(
            format!("{recalled:?}"),
            format!("{keyed:?}"),
            "the recalling read and the keyed read differ"
        );
        assert_eq!(key(&recalled), key(keyed), "a recalled key differs");
    };
    let memo = PlanMemo::new(4).expect("entries");
    let half = &body[..body.len() / 2];
    same(
        &memo,
        half,
        &admission::decode_keyed(half, ObjectTexts::KEY_LIMIT),
    );
    for _ in 0..2 {
        same(&memo, body, keyed);
    }
    // The uid's place in the body, when it was borrowed from it.
    let Some(uid) = keyed.as_ref().ok().map(|decoded| &decoded.request.uid) else {
        return;
    };
    let Some(from) = (uid.as_ptr() as usize).checked_sub(body.as_ptr() as usize) else {
        return;
    };
    if uid.is_empty() || body.get(from..from + uid.len()) != Some(uid.as_bytes()) {
        return;
    }
    let length = uid.len();
    let plain = vec![b'7'; length];
    let mut variants = vec![plain];
    for odd in [&b"\\"[..], b"\"", b"\t", b"\xff"] {
        let mut text = vec![b'7'; length];
        let at = length.saturating_sub(odd.len());
        text.truncate(at);
        text.extend_from_slice(odd);
        variants.push(text);
    }
    for text in variants {
        let mut other = body.to_vec();
        other.splice(from..from + length, text);
        same(
            &memo,
            &other,
            &admission::decode_keyed(&other, ObjectTexts::KEY_LIMIT),
        );
    }
}
