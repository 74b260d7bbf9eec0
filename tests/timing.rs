//! The comparison is constant time: verifying a forged signature takes as long whether none or
//! all but the last of its bytes are right. A statistical check over interleaved batches.

use std::hint::black_box;
use std::time::Instant;

use metigan_webhook::{sign, Reason, Verifier};

const T: u64 = 1_700_000_000;

fn forged(correct_prefix: usize, body: &[u8]) -> String {
    let good = sign("whsec_timing", T, body);
    let hex = good.split_once("v1=").unwrap().1;
    let mut bytes: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    for b in bytes.iter_mut().skip(correct_prefix) {
        *b ^= 0x5a;
    }
    let forged: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    // Sixteen copies: every comparison the verifier makes has the same prefix.
    let v1 = format!(",v1={forged}").repeat(16);
    format!("t={T}{v1}")
}

/// Median time per verification of `header`, over `n` runs.
fn batch(verifier: &Verifier, header: &str, body: &[u8], n: u32) -> f64 {
    let started = Instant::now();
    for _ in 0..n {
        let result = verifier.verify(Some(black_box(header.as_bytes())), None, black_box(body), T);
        assert_eq!(result.unwrap_err().reason(), Reason::SignatureMismatch);
    }
    started.elapsed().as_nanos() as f64 / f64::from(n)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[xs.len() / 2]
}

#[test]
fn verification_time_does_not_depend_on_the_correct_prefix() {
    let verifier = Verifier::new(["whsec_timing"]).unwrap();
    let body = br#"{"event":"email.delivered","messageId":"m","data":{}}"#;
    let none_right = forged(0, body);
    let all_but_last = forged(31, body);
    assert_ne!(none_right, all_but_last);

    // Interleave batches so drift on a busy machine hits both alike; retry a noisy run.
    let mut last = (0.0, 0.0);
    for _attempt in 0..3 {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..31 {
            a.push(batch(&verifier, &none_right, body, 200));
            b.push(batch(&verifier, &all_but_last, body, 200));
        }
        let (ma, mb) = (median(a), median(b));
        last = (ma, mb);
        let ratio = mb / ma;
        eprintln!(
            "median ns/verify: 0 bytes right {ma:.0}, 31 bytes right {mb:.0}, ratio {ratio:.3}"
        );
        if (0.8..=1.25).contains(&ratio) {
            return;
        }
    }
    panic!(
        "verification time depends on the forged prefix: {:.0} ns vs {:.0} ns",
        last.0, last.1
    );
}
