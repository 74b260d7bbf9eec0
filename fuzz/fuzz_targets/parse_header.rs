//! The signature header parser on arbitrary bytes: never panics, and what it accepts obeys the
//! rules (a timestamp, 1 to 16 `v1` values, a header of at most 4 KiB).
#![no_main]

use libfuzzer_sys::fuzz_target;
use metigan_webhook::signature::{MAX_HEADER_LEN, MAX_SIGNATURES};
use metigan_webhook::{Reason, SignatureHeader};

fuzz_target!(|data: &[u8]| {
    // The first line is the timestamp header, the rest the signature header.
    let (ts, sig) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (Some(&data[..i]), &data[i + 1..]),
        None => (None, data),
    };
    match SignatureHeader::parse(Some(sig), ts) {
        Ok(header) => {
            assert!(sig.len() <= MAX_HEADER_LEN);
            assert!((1..=MAX_SIGNATURES).contains(&header.signature_count()));
        }
        Err(rejection) => assert!(matches!(
            rejection.reason(),
            Reason::MissingSignature | Reason::MalformedSignature
        )),
    }
});
