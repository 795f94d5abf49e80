//! Property tests of the rendezvous crypto (issue 18): sealing round-trips for any secret,
//! context, plaintext and nonce; any single bit flipped in a sealed blob or a request
//! signature is refused; the secret's hex form round-trips. `PROPTEST_CASES=n` raises the
//! case count (docs/testing.md).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use model::secret::ClusterSecret;
use proptest::prelude::*;
use protocol::seal::{ClusterKeys, RequestToSign, record_context};
use protocol::wire::Sealed;

/// Cases per property unless `PROPTEST_CASES` says otherwise: a few seconds in CI.
const DEFAULT_CASES: u32 = 128;

fn config() -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = DEFAULT_CASES;
    }
    // A failing seed is kept next to this file (`<name>.proptest-regressions`) and
    // replayed first; there is no `src/lib.rs` beside `tests/` for the default to find.
    c.failure_persistence = Some(Box::new(
        proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
    ));
    c
}

fn keys(secret: [u8; 32]) -> ClusterKeys {
    ClusterKeys::derive(&ClusterSecret::from_bytes(secret))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn sealed_values_round_trip(
        secret in any::<[u8; 32]>(),
        key in ".{0,40}",
        plaintext in prop::collection::vec(any::<u8>(), 0..512),
        nonce in any::<[u8; 12]>(),
    ) {
        let k = keys(secret);
        let context = record_context(&key);
        let sealed = k.seal(&context, &plaintext, nonce);
        prop_assert_eq!(k.open(&context, &sealed).unwrap(), plaintext);
    }

    #[test]
    fn any_bit_flip_of_a_sealed_blob_is_refused(
        secret in any::<[u8; 32]>(),
        plaintext in prop::collection::vec(any::<u8>(), 0..256),
        nonce in any::<[u8; 12]>(),
        bit in any::<prop::sample::Index>(),
    ) {
        let k = keys(secret);
        let context = record_context("join/token");
        let sealed = k.seal(&context, &plaintext, nonce);
        let mut raw = B64.decode(&sealed.0).unwrap();
        let i = bit.index(raw.len() * 8);
        raw[i / 8] ^= 1 << (i % 8);
        let tampered = Sealed(B64.encode(raw));
        prop_assert!(k.open(&context, &tampered).is_err(), "bit {i} flipped and still opened");
    }

    #[test]
    fn any_bit_flip_of_a_signature_is_refused(
        secret in any::<[u8; 32]>(),
        body in prop::collection::vec(any::<u8>(), 0..256),
        timestamp in any::<u64>(),
        nonce in "[a-z0-9]{1,16}",
        bit in 0usize..256,
    ) {
        let k = keys(secret);
        let req = RequestToSign {
            method: "POST",
            path_and_query: "/v1/clusters/x/records",
            body: &body,
            timestamp,
            nonce: &nonce,
            client: "cp-1",
        };
        let sig = k.signing_key().sign(&req);
        prop_assert!(k.signing_key().verify(&req, &sig));
        let mut raw = hex::decode(&sig).unwrap();
        prop_assert_eq!(raw.len() * 8, 256);
        raw[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(!k.signing_key().verify(&req, &hex::encode(raw)), "bit {bit} flipped and still verified");
    }

    #[test]
    fn secret_hex_round_trips_and_names_its_cluster(
        secret in any::<[u8; 32]>(),
        bit in 0usize..256,
    ) {
        let s = ClusterSecret::from_bytes(secret);
        prop_assert_eq!(&ClusterSecret::from_hex(&format!("{}\n", s.to_hex())).unwrap(), &s);
        let mut other = secret;
        other[bit / 8] ^= 1 << (bit % 8);
        prop_assert_ne!(ClusterSecret::from_bytes(other).cluster_id(), s.cluster_id());
    }
}
