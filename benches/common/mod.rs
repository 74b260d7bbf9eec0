//! What the benchmarks share: the secret, a fixed clock and realistic Metigan events of an exact
//! size.

/// The secret every benchmark signs and verifies with (used verbatim, as Metigan does).
pub const SECRET: &str = "whsec_benchmark_secret_5f1d2c3b4a";

/// The fixed "now" (unix seconds) of the in-process benchmarks; events are signed at this time.
pub const NOW: u64 = 1_700_000_000;

/// A realistic Metigan event of exactly `size` bytes (at least 200): from 1 KiB an
/// `email.clicked` event with the fields Metigan sends (recipient, subject, link, client, ...),
/// below it a short `email.delivered` one; a free-text field is grown to the exact size.
pub fn event_body(size: usize) -> Vec<u8> {
    let (head, tail) = if size >= 1024 {
        (
            concat!(
                r#"{"event":"email.clicked","messageId":"msg_2f9c81d07be34a6f9d1e","#,
                r#""data":{"emailId":"em_7d3a9c2e51f04b8a","recipient":"jane.doe@example.com","#,
                r#""from":"Acme Billing <billing@acme.example>","#,
                r#""subject":"Your invoice INV-2024-00042 is ready (\u20ac 1,234.56 due on 15 Feb)","#,
                r#""status":"clicked","campaignId":"cmp_spring_sale_2024","#,
                r#""tags":["invoice","transactional","eu-west"],"#,
                r#""metadata":{"url":"https://acme.example/invoices/INV-2024-00042?utm_source=metigan","#,
                r#""ip":"203.0.113.42","country":"PT","device":"desktop","#,
                r#""userAgent":"Mozilla/5.0 (X11; Linux x86_64) "#,
            ),
            concat!(
                r#"","clickedAt":"2024-01-15T10:30:00.123Z"},"#,
                r#""userId":"usr_01HM8Q3ZK5T6"},"timestamp":1705314600123}"#,
            ),
        )
    } else {
        (
            concat!(
                r#"{"event":"email.delivered","messageId":"msg_2f9c81d07be34a6f9d1e","#,
                r#""data":{"recipient":"jane.doe@example.com","subject":"Your invoice "#,
            ),
            r#"","status":"delivered"},"timestamp":1705314600123}"#,
        )
    };
    assert!(
        head.len() + tail.len() <= size,
        "event_body: {size} B is too small"
    );
    let filler = b"AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 ";
    let mut body = Vec::with_capacity(size);
    body.extend_from_slice(head.as_bytes());
    let pad = size - head.len() - tail.len();
    body.extend(filler.iter().copied().cycle().take(pad));
    body.extend_from_slice(tail.as_bytes());
    debug_assert_eq!(body.len(), size);
    body
}

/// A human label for a byte count: `256 B`, `1 KiB`, `16 KiB`, `1 MiB`.
#[allow(dead_code)] // not every benchmark labels sizes
pub fn label(size: usize) -> String {
    match size {
        s if s >= 1 << 20 && s % (1 << 20) == 0 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 && s % (1 << 10) == 0 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}
