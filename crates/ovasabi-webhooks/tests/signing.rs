//! Standard Webhooks signatures against the published test vectors of the reference libraries
//! (github.com/standard-webhooks/standard-webhooks), and the verifier's refusals.

use ovasabi_webhooks::signing::{
    sign, signature_header, verify, Secret, SigningError, VerifyError, HEADER_ID, HEADER_SIGNATURE,
    HEADER_TIMESTAMP, TOLERANCE,
};

// The vector shared by the reference libraries' "sign function works" tests:
// standard-webhooks/standard-webhooks, libraries/javascript/src/webhook.test.ts,
// libraries/python/tests/test_webhooks.py (test_sign_function) and
// libraries/go/webhook_test.go (TestWebhookSign).
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const TIMESTAMP: i64 = 1614265330;
const PAYLOAD: &[u8] = br#"{"test": 2432232314}"#;
const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

// A wrong v1 signature used by the multi-signature tests of the same three files
// ("multi sig payload is valid", test_multi_sig_payload_is_valid, "valid multi sig is valid").
const OTHER_SIGNATURE: &str = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=";

fn secret() -> Secret {
    Secret::parse(SECRET).expect("the reference secret parses")
}

fn verify_vector(timestamp: &str, header: &str, now: i64) -> Result<(), VerifyError> {
    verify(&secret(), MSG_ID, timestamp, header, PAYLOAD, now)
}

#[test]
fn signs_the_reference_vector() {
    assert_eq!(sign(&secret(), MSG_ID, TIMESTAMP, PAYLOAD), SIGNATURE);
}

#[test]
fn signs_the_rust_reference_vector() {
    // standard-webhooks/standard-webhooks, libraries/rust/src/lib.rs, test_sign.
    let secret = Secret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
    assert_eq!(
        sign(
            &secret,
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            br#"{"email":"test@example.com","username":"test_user"}"#,
        ),
        "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
    );
}

#[test]
fn the_prefix_is_optional() {
    // "verification works with and without signature prefix" (javascript), TestWebhookPrefix
    // (go): the reference tests construct the verifier from the bare base64.
    let bare = Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    assert_eq!(bare, secret());
    assert_eq!(sign(&bare, MSG_ID, TIMESTAMP, PAYLOAD), SIGNATURE);
}

#[test]
fn header_names_and_tolerance_are_the_specifications() {
    assert_eq!(HEADER_ID, "webhook-id");
    assert_eq!(HEADER_TIMESTAMP, "webhook-timestamp");
    assert_eq!(HEADER_SIGNATURE, "webhook-signature");
    assert_eq!(TOLERANCE.as_secs(), 300);
}

#[test]
fn accepts_the_vector_at_its_own_timestamp() {
    verify_vector(&TIMESTAMP.to_string(), SIGNATURE, TIMESTAMP).unwrap();
}

#[test]
fn accepts_a_timestamp_within_the_tolerance_either_way() {
    let ts = TIMESTAMP.to_string();
    for offset in [-299, -1, 1, 299, -300, 300] {
        verify_vector(&ts, SIGNATURE, TIMESTAMP + offset)
            .unwrap_or_else(|e| panic!("now = timestamp {offset:+} s: {e}"));
    }
}

#[test]
fn refuses_a_timestamp_more_than_five_minutes_off() {
    let ts = TIMESTAMP.to_string();
    // The message is 301 s older than the receiver's clock.
    let old = verify_vector(&ts, SIGNATURE, TIMESTAMP + 301).unwrap_err();
    assert_eq!(old, VerifyError::TooOld { age_secs: 301 });
    assert!(old.to_string().contains("too old"), "{old}");
    // The message is 301 s ahead of the receiver's clock.
    let new = verify_vector(&ts, SIGNATURE, TIMESTAMP - 301).unwrap_err();
    assert_eq!(new, VerifyError::TooNew { ahead_secs: 301 });
    assert!(new.to_string().contains("future"), "{new}");
}

#[test]
fn refuses_a_missing_or_unparsable_timestamp() {
    // "invalid timestamp throws error" (javascript) uses "hello".
    assert_eq!(
        verify_vector("", SIGNATURE, TIMESTAMP),
        Err(VerifyError::MissingTimestamp)
    );
    for bad in [
        "hello",
        "1614265330.0",
        "1614265330 ",
        " 1614265330",
        "0x60380b72",
        "1e9",
    ] {
        let err = verify_vector(bad, SIGNATURE, TIMESTAMP).unwrap_err();
        assert_eq!(err, VerifyError::InvalidTimestamp, "{bad:?}");
        assert!(err.to_string().contains("integer"), "{err}");
    }
}

#[test]
fn refuses_every_single_modified_byte_of_the_payload() {
    let ts = TIMESTAMP.to_string();
    for i in 0..PAYLOAD.len() {
        for flip in [0x01, 0x20, 0x80] {
            let mut payload = PAYLOAD.to_vec();
            payload[i] ^= flip;
            assert_eq!(
                verify(&secret(), MSG_ID, &ts, SIGNATURE, &payload, TIMESTAMP),
                Err(VerifyError::NoMatchingSignature),
                "payload byte {i} ^ {flip:#x}"
            );
        }
    }
    // Appending or removing a byte also breaks it.
    let longer = [PAYLOAD, b" "].concat();
    assert!(verify(&secret(), MSG_ID, &ts, SIGNATURE, &longer, TIMESTAMP).is_err());
    let shorter = &PAYLOAD[..PAYLOAD.len() - 1];
    assert!(verify(&secret(), MSG_ID, &ts, SIGNATURE, shorter, TIMESTAMP).is_err());
}

#[test]
fn refuses_every_single_modified_byte_of_the_msg_id() {
    let ts = TIMESTAMP.to_string();
    for i in 0..MSG_ID.len() {
        let mut id = MSG_ID.as_bytes().to_vec();
        id[i] ^= 0x01;
        let id = String::from_utf8(id).unwrap();
        assert_eq!(
            verify(&secret(), &id, &ts, SIGNATURE, PAYLOAD, TIMESTAMP),
            Err(VerifyError::NoMatchingSignature),
            "msg id {id}"
        );
    }
}

#[test]
fn refuses_every_single_modified_byte_of_the_timestamp() {
    let ts = TIMESTAMP.to_string();
    for i in 0..ts.len() {
        let mut modified = ts.as_bytes().to_vec();
        modified[i] ^= 0x01;
        let modified = String::from_utf8(modified).unwrap();
        // Checked against the receiver's clock at the original time: the high digits fail the
        // tolerance, the low ones the signature.
        assert!(
            verify_vector(&modified, SIGNATURE, TIMESTAMP).is_err(),
            "timestamp {modified}"
        );
        // With the receiver's clock at the modified time, only the signature can refuse it.
        let at: i64 = modified.parse().unwrap();
        assert_eq!(
            verify_vector(&modified, SIGNATURE, at),
            Err(VerifyError::NoMatchingSignature),
            "timestamp {modified}"
        );
    }
}

#[test]
fn refuses_every_single_modified_byte_of_the_signature() {
    let ts = TIMESTAMP.to_string();
    for i in 0..SIGNATURE.len() {
        for flip in [0x01, 0x02, 0x20] {
            let mut sig = SIGNATURE.as_bytes().to_vec();
            sig[i] ^= flip;
            let sig = String::from_utf8(sig).unwrap();
            assert_eq!(
                verify_vector(&ts, &sig, TIMESTAMP),
                Err(VerifyError::NoMatchingSignature),
                "signature {sig}"
            );
        }
    }
    // libraries/python/tests/test_webhooks.py, test_invalid_signature_raises_error: the last
    // base64 digit changed.
    assert!(verify_vector(
        &ts,
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=",
        TIMESTAMP
    )
    .is_err());
}

#[test]
fn refuses_a_wrong_secret() {
    let ts = TIMESTAMP.to_string();
    let other = Secret::generate();
    assert_eq!(
        verify(&other, MSG_ID, &ts, SIGNATURE, PAYLOAD, TIMESTAMP),
        Err(VerifyError::NoMatchingSignature)
    );
}

#[test]
fn accepts_the_right_signature_among_several() {
    let ts = TIMESTAMP.to_string();
    verify_vector(&ts, &format!("{OTHER_SIGNATURE} {SIGNATURE}"), TIMESTAMP).unwrap();
    verify_vector(&ts, &format!("{SIGNATURE} {OTHER_SIGNATURE}"), TIMESTAMP).unwrap();
    // The reference libraries' multi-signature case: a wrong v1, a v2, the right one, a wrong v1.
    let header = format!(
        "{OTHER_SIGNATURE} v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= {SIGNATURE} {OTHER_SIGNATURE}"
    );
    verify_vector(&ts, &header, TIMESTAMP).unwrap();
}

#[test]
fn refuses_several_wrong_signatures() {
    // libraries/rust/src/lib.rs, test_no_verify_with_multiple_signatures.
    let ts = TIMESTAMP.to_string();
    let header = "v1,tFtCZ5RDCPxzWQRWXWPgrCgE2frDBe9gjpbWQxnVfsQ= \
                  v1,Mm7xgUVICxZfQ3bgf0h0Dof65L/IFx+PnZvnDWPCX6Q= \
                  v1,9DfC1c3eeOrXB6w/5dIDydLNQaEyww5KalE5jLBZucE=";
    assert_eq!(
        verify_vector(&ts, header, TIMESTAMP),
        Err(VerifyError::NoMatchingSignature)
    );
}

#[test]
fn ignores_other_signature_versions() {
    let ts = TIMESTAMP.to_string();
    let digest = SIGNATURE.strip_prefix("v1,").unwrap();
    // The right digest under another version label does not count.
    for version in ["v1a", "v2", "V1", "v0", ""] {
        let header = format!("{version},{digest}");
        assert_eq!(
            verify_vector(&ts, &header, TIMESTAMP),
            Err(VerifyError::NoMatchingSignature),
            "{header}"
        );
    }
    // ...and does not prevent a v1 entry from matching.
    let header = format!("v1a,{digest} v2,garbage {SIGNATURE}");
    verify_vector(&ts, &header, TIMESTAMP).unwrap();
}

#[test]
fn refuses_a_malformed_header() {
    let ts = TIMESTAMP.to_string();
    let digest = SIGNATURE.strip_prefix("v1,").unwrap();
    let malformed = [
        "".to_owned(),
        " ".to_owned(),
        "v1".to_owned(),
        // libraries/javascript/src/webhook.test.ts, "partial signature throws error".
        "v1,".to_owned(),
        SIGNATURE[..8].to_owned(),
        // libraries/javascript/src/webhook.test.ts, "invalid signature throws error".
        "v1,dawfeoifkpqwoekfpqoekf".to_owned(),
        digest.to_owned(),
        format!("v1;{digest}"),
        format!("v1, {digest}"),
        format!("v1,{digest},"),
        format!("v1,{}", digest.trim_end_matches('=')),
        format!("{SIGNATURE}x"),
        format!("v1,{digest}{digest}"),
    ];
    for header in malformed {
        assert_eq!(
            verify_vector(&ts, &header, TIMESTAMP),
            Err(VerifyError::NoMatchingSignature),
            "{header:?}"
        );
    }
}

#[test]
fn a_rotation_header_verifies_under_either_secret() {
    let old = Secret::generate();
    let new = Secret::generate();
    let header = signature_header(&[&old, &new], MSG_ID, TIMESTAMP, PAYLOAD);
    assert_eq!(
        header,
        format!(
            "{} {}",
            sign(&old, MSG_ID, TIMESTAMP, PAYLOAD),
            sign(&new, MSG_ID, TIMESTAMP, PAYLOAD)
        )
    );
    let ts = TIMESTAMP.to_string();
    verify(&old, MSG_ID, &ts, &header, PAYLOAD, TIMESTAMP).unwrap();
    verify(&new, MSG_ID, &ts, &header, PAYLOAD, TIMESTAMP).unwrap();
    let stranger = Secret::generate();
    assert!(verify(&stranger, MSG_ID, &ts, &header, PAYLOAD, TIMESTAMP).is_err());
}

#[test]
fn a_single_secret_header_is_its_signature() {
    assert_eq!(
        signature_header(&[&secret()], MSG_ID, TIMESTAMP, PAYLOAD),
        SIGNATURE
    );
    assert_eq!(signature_header(&[], MSG_ID, TIMESTAMP, PAYLOAD), "");
}

#[test]
fn generated_secrets_round_trip_through_display() {
    for _ in 0..16 {
        let secret = Secret::generate();
        let text = secret.to_string();
        assert!(text.starts_with("whsec_"), "{text}");
        assert_eq!(secret.as_bytes().len(), 32);
        assert_eq!(Secret::parse(&text).unwrap(), secret);
    }
    assert_eq!(secret().to_string(), SECRET);
}

#[test]
fn refuses_bad_secrets_with_a_message_that_shows_the_format() {
    let cases: [(&str, SigningError); 9] = [
        ("", SigningError::Empty),
        ("whsec_", SigningError::Empty),
        ("whsec_not base64!", SigningError::InvalidBase64),
        // Missing padding, URL-safe alphabet, surrounding whitespace.
        ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS", SigningError::InvalidBase64),
        ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLa_-", SigningError::InvalidBase64),
        ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n", SigningError::InvalidBase64),
        // The asymmetric key prefixes are not symmetric secrets.
        ("whsk_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", SigningError::InvalidBase64),
        // 18 bytes: too short.
        ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZI", SigningError::TooShort { len: 18 }),
        // 72 bytes: too long.
        (
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            SigningError::TooLong { len: 72 },
        ),
    ];
    for (text, expected) in cases {
        let err = Secret::parse(text).unwrap_err();
        assert_eq!(err, expected, "{text:?}");
        let message = err.to_string();
        assert!(message.contains("whsec_"), "{message}");
        assert!(message.contains("base64"), "{message}");
        assert!(message.contains("24 to 64"), "{message}");
    }
}

#[test]
fn debug_does_not_leak_the_key() {
    let secret = secret();
    let debug = format!("{secret:?}");
    assert_eq!(debug, "Secret(whsec_…redacted)");
    assert!(!debug.contains("MfKQ9r8G"));
    let generated = Secret::generate();
    let encoded = generated.to_string();
    let debug = format!("{generated:?} {:#?}", Some(&generated));
    assert!(!debug.contains(&encoded["whsec_".len()..]), "{debug}");
}
