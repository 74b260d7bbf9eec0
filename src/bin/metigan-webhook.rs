//! `metigan-webhook`: sign, send, verify and watch Metigan webhooks from the command line, and
//! see and repair a durable inbox through its admin router.
//!
//! Install with `cargo install metigan-webhook --features cli`; run `metigan-webhook --help`.

/// Writes one line to stderr. A closed stderr (`2>&-`, a reader that went away) loses the line
/// instead of panicking as `eprintln!` would.
macro_rules! log {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

#[path = "metigan-webhook/diagnose.rs"]
mod diagnose;
#[path = "metigan-webhook/escape.rs"]
mod escape;
#[path = "metigan-webhook/inbox.rs"]
mod inbox;
#[path = "metigan-webhook/json.rs"]
mod json;
#[path = "metigan-webhook/listen.rs"]
mod listen;
#[path = "metigan-webhook/net.rs"]
mod net;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use metigan_webhook::idempotency::Dedupe;
use metigan_webhook::testing::{SampleEvent, SignedRequest};
use metigan_webhook::{sign, Envelope, EventType, MetiganSignatureLayer, DEFAULT_BODY_LIMIT};

const EXIT_CODES: &str = "\
Exit codes (stable, for scripts):
  0  success: `verify` printed ok; every answer to `send` was 2xx; `sign` and `sample` printed;
     `listen` was stopped with Ctrl-C or SIGTERM; `inbox` did what it was asked
  1  a negative result: `verify` found that the request would be rejected (the reason code is
     the first line of its output); `send` got at least one answer that was not 2xx; `inbox`
     found no such event, or the event is not a dead letter, or the admin API refused
  2  usage error: bad arguments, no secret, a secret that is empty or (for sign, send and
     listen) has surrounding whitespace, an https:// URL or a URL with a user name or
     password for send, a --webhook-id that is not a valid header value, a --request file
     that is not a raw HTTP request, no --admin-url (or METIGAN_INBOX_ADMIN) for inbox
  3  I/O or network error: a file that cannot be read or written, connection refused, no answer
     within --timeout, an address already in use, an inbox store that failed (503)

Errors are one line on stderr starting with `metigan-webhook: error:`.
The secret is read from --secret or WEBHOOK_SECRET (prefer the variable: a flag shows in `ps`
and shell history) and is never printed.";

// No `Debug` on the argument types: they hold the secret.

/// Sign, send, verify and watch Metigan webhooks.
///
/// Test a receiver without waiting for real email traffic (`send`), explain why a request is
/// refused (`verify`), watch what Metigan sends through a tunnel (`listen`), and see and repair
/// a durable inbox (`inbox`).
#[derive(Parser)]
#[command(name = "metigan-webhook", version, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the X-Webhook-Signature header for a body.
    ///
    /// Example: metigan-webhook sign --timestamp 1700000000 event.json
    #[command(after_help = EXIT_CODES)]
    Sign(SignArgs),
    /// POST signed sample events (or a body file) to a receiver and print its answers.
    ///
    /// Example: metigan-webhook send email.bounced --set bounceType=soft --duplicate
    #[command(after_help = EXIT_CODES)]
    Send(SendArgs),
    /// Check one request: `ok`, or the exact rejection reason and its likely cause.
    ///
    /// The first line of the output is `ok` or the reason code (`signature_mismatch`, ...);
    /// the lines after it explain. Example:
    /// metigan-webhook verify --signature "t=1700000000,v1=5f0c..." body.json
    #[command(after_help = EXIT_CODES)]
    Verify(VerifyArgs),
    /// Run a local receiver that prints every verified event (rejections go to stderr).
    ///
    /// Point a tunnel at it to watch what Metigan sends. Example:
    /// metigan-webhook listen --port 3000 --format line --save captured/
    #[command(after_help = EXIT_CODES)]
    Listen(ListenArgs),
    /// Print the sample body of an event type (the one `send` uses).
    ///
    /// Example: metigan-webhook sample email.clicked --pretty
    #[command(after_help = EXIT_CODES)]
    Sample(SampleArgs),
    /// See and repair a durable inbox through its admin router: stats, list, show, replay,
    /// purge.
    ///
    /// Talks to `metigan_webhook::inbox::admin::router` (feature `inbox-admin`) at
    /// --admin-url or METIGAN_INBOX_ADMIN. Example:
    /// metigan-webhook inbox list --state dead --admin-url http://127.0.0.1:9090
    #[command(after_help = EXIT_CODES)]
    Inbox(inbox::InboxArgs),
}

#[derive(Args)]
struct Secret {
    /// The webhook's signing secret, used verbatim (a `whsec_` prefix is part of it).
    #[arg(
        long,
        env = "WEBHOOK_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    secret: Option<String>,
}

#[derive(Args)]
struct Secrets {
    /// The webhook's signing secret, used verbatim (a `whsec_` prefix is part of it). Repeat
    /// the flag to accept several (key rotation).
    #[arg(
        long = "secret",
        env = "WEBHOOK_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    secrets: Vec<String>,
}

#[derive(Args)]
struct SignArgs {
    /// The body to sign, byte for byte; `-` reads stdin.
    #[arg(value_name = "BODY_FILE", default_value = "-")]
    body: PathBuf,
    #[command(flatten)]
    secret: Secret,
    /// The time to sign at, in unix seconds (default: now).
    #[arg(long, value_name = "UNIX_SECONDS")]
    timestamp: Option<u64>,
}

#[derive(Args)]
struct SampleOptions {
    /// The `messageId` of the sample (default: a fresh one per delivery).
    #[arg(long, value_name = "ID")]
    message_id: Option<String>,
    /// Set a field of the sample's `data` (dotted path, e.g. `metadata.url=https://...`).
    /// VALUE is taken as JSON when it parses (`count=3`, `flag=true`), else as a string.
    /// Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

#[derive(Args)]
struct SendArgs {
    /// The event type to send a sample of (`email.delivered`, `email.bounced`, ...; unknown
    /// types are sent too), or `all` for one of every type Metigan documents.
    #[arg(value_name = "EVENT", default_value = "email.delivered")]
    event: String,
    /// Send this file's bytes instead of a sample.
    #[arg(long, value_name = "FILE")]
    body: Option<PathBuf>,
    /// Where to POST.
    #[arg(
        long,
        env = "METIGAN_WEBHOOK_URL",
        default_value = "http://127.0.0.1:3000/webhooks/metigan"
    )]
    url: String,
    #[command(flatten)]
    secret: Secret,
    #[command(flatten)]
    sample: SampleOptions,
    /// Send N deliveries of each event (each sample gets a fresh messageId unless
    /// --message-id is given).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    repeat: u32,
    /// Deliver every request twice, identical, as Metigan retries: the second one shows
    /// deduplication.
    #[arg(long)]
    duplicate: bool,
    /// Sign 10 minutes in the past, outside the default 5-minute window
    /// (-> timestamp_out_of_tolerance).
    #[arg(long, conflicts_with_all = ["future", "timestamp"])]
    stale: bool,
    /// Sign 10 minutes in the future (-> timestamp_out_of_tolerance).
    #[arg(long, conflicts_with = "timestamp")]
    future: bool,
    /// Sign at this time (unix seconds) instead of now.
    #[arg(long, value_name = "UNIX_SECONDS")]
    timestamp: Option<u64>,
    /// Sign with another secret (-> signature_mismatch).
    #[arg(long)]
    wrong_secret: bool,
    /// Change one character of the body after signing (-> signature_mismatch).
    #[arg(long)]
    tamper: bool,
    /// The X-Webhook-Id header (default: a fresh id per delivery, the same for a duplicate).
    #[arg(long, value_name = "ID")]
    webhook_id: Option<String>,
    /// Give up on an answer after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    timeout: u64,
}

#[derive(Args)]
struct VerifyArgs {
    /// The body exactly as received; `-` reads stdin. Not with --request.
    #[arg(value_name = "BODY_FILE", conflicts_with = "request")]
    body: Option<PathBuf>,
    /// The X-Webhook-Signature value as received. Not with --request.
    #[arg(
        long,
        visible_alias = "header",
        value_name = "HEADER_VALUE",
        conflicts_with = "request",
        allow_hyphen_values = true
    )]
    signature: Option<String>,
    /// The X-Webhook-Timestamp value, if any (used when the signature has no `t=`).
    #[arg(long, value_name = "UNIX_SECONDS", conflicts_with = "request")]
    timestamp_header: Option<String>,
    /// A captured raw HTTP request (request line, headers, blank line, body), such as the files
    /// `listen --save` writes.
    #[arg(long, value_name = "FILE")]
    request: Option<PathBuf>,
    #[command(flatten)]
    secrets: Secrets,
    /// Check the window against this time (unix seconds) instead of now: the time a captured
    /// request was received.
    #[arg(long, value_name = "UNIX_SECONDS")]
    now: Option<u64>,
    /// Do not check the timestamp window (only the signature and the payload).
    #[arg(long, conflicts_with = "now")]
    ignore_timestamp: bool,
    /// The window, in seconds either way.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    tolerance: u64,
    /// The body limit, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_BODY_LIMIT)]
    body_limit: usize,
    /// Also print the signature computed for this body (sensitive: it is a valid signature for
    /// the body at that time).
    #[arg(long)]
    show_expected: bool,
}

#[derive(Args)]
struct ListenArgs {
    /// The address to listen on (0.0.0.0 to accept other machines).
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// The port to listen on (0: any free port, printed on stderr).
    #[arg(long, default_value_t = 3000)]
    port: u16,
    /// How to print each verified event.
    #[arg(long, value_enum, default_value_t = listen::Format::Pretty)]
    format: listen::Format,
    /// Save every request, verified or not, as a raw HTTP file in DIR
    /// (`<unix seconds received>-<n>.http`), to check later with `verify --request`. A body
    /// refused before verification (over --body-limit, or cut off by a read error) is saved
    /// as far as it was read, in `<unix seconds received>-<n>-truncated.http` with an
    /// `x-metigan-webhook-truncated` header saying why and how many bytes were kept.
    #[arg(long, value_name = "DIR")]
    save: Option<PathBuf>,
    #[command(flatten)]
    secrets: Secrets,
    /// The window, in seconds either way.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    tolerance: u64,
    /// The body limit, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_BODY_LIMIT)]
    body_limit: usize,
    /// Deduplicate retried deliveries (in memory): a duplicate is answered 200 and not printed.
    #[arg(long)]
    dedupe: bool,
}

#[derive(Args)]
struct SampleArgs {
    /// The event type, or `all` for one per line of every documented type.
    #[arg(value_name = "EVENT", default_value = "email.delivered")]
    event: String,
    /// Indent the JSON (the body `send` sends is compact).
    #[arg(long)]
    pretty: bool,
    /// List the documented event types instead.
    #[arg(long)]
    list: bool,
    #[command(flatten)]
    sample: SampleOptions,
}

/// A failed command: its exit code and its one-line message.
#[derive(Debug)]
pub(crate) struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: 2,
            message: message.into(),
        }
    }

    /// A negative result (exit code 1).
    pub(crate) fn negative(message: impl Into<String>) -> Self {
        Failure {
            code: 1,
            message: message.into(),
        }
    }

    pub(crate) fn io(message: impl Into<String>) -> Self {
        Failure {
            code: 3,
            message: message.into(),
        }
    }
}

/// Current unix time in seconds.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Sign(args) => cmd_sign(args),
        Command::Sample(args) => cmd_sample(args),
        Command::Verify(args) => cmd_verify(args),
        Command::Send(args) => runtime().and_then(|rt| rt.block_on(cmd_send(args))),
        Command::Listen(args) => runtime().and_then(|rt| rt.block_on(cmd_listen(args))),
        Command::Inbox(args) => runtime().and_then(|rt| rt.block_on(inbox::run(args))),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            let _ = std::io::stdout().flush();
            log!("metigan-webhook: error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::io(format!("cannot start the async runtime: {e}")))
}

fn read_input(path: &Path) -> Result<Vec<u8>, Failure> {
    if path.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|e| Failure::io(format!("cannot read stdin: {e}")))?;
        Ok(bytes)
    } else {
        std::fs::read(path).map_err(|e| Failure::io(format!("cannot read {}: {e}", path.display())))
    }
}

/// The one secret of sign/send: present, and valid by the crate's rules.
fn one_secret(secret: Secret) -> Result<String, Failure> {
    let secret = secret.secret.ok_or_else(|| {
        Failure::usage("no secret: pass --secret or set WEBHOOK_SECRET".to_owned())
    })?;
    MetiganSignatureLayer::new(&secret)
        .map_err(|e| Failure::usage(format!("the secret (--secret or WEBHOOK_SECRET): {e}")))?;
    Ok(secret)
}

fn secrets(secrets: Secrets) -> Result<Vec<String>, Failure> {
    if secrets.secrets.is_empty() {
        return Err(Failure::usage(
            "no secret: pass --secret (repeatable) or set WEBHOOK_SECRET",
        ));
    }
    Ok(secrets.secrets)
}

fn cmd_sign(args: SignArgs) -> Result<u8, Failure> {
    let secret = one_secret(args.secret)?;
    let body = read_input(&args.body)?;
    let header = sign(&secret, args.timestamp.unwrap_or_else(unix_now), &body);
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{header}").and_then(|()| out.flush()) {
        Ok(()) => Ok(0),
        // The reader went away (`| head -0`): nobody is left to read the line, not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(Failure::io(format!("cannot write to stdout: {e}"))),
    }
}

/// The sample of `event`, adjusted by `--message-id` and `--set`.
fn build_sample(event: &str, options: &SampleOptions) -> Result<SampleEvent, Failure> {
    let mut sample = SampleEvent::new(EventType::parse(event));
    if let Some(id) = &options.message_id {
        sample = sample.with_message_id(id.as_str());
    }
    for assignment in &options.set {
        let Some((key, value)) = assignment.split_once('=') else {
            return Err(Failure::usage(format!(
                "--set {assignment:?}: expected KEY=VALUE"
            )));
        };
        if key.is_empty() || key.split('.').any(str::is_empty) {
            return Err(Failure::usage(format!(
                "--set {assignment:?}: empty key or path segment"
            )));
        }
        let value = serde_json::from_str::<serde_json::Value>(value)
            .unwrap_or_else(|_| serde_json::Value::from(value));
        sample = sample.with_field(key, value);
    }
    Ok(sample)
}

fn event_names(event: &str) -> Vec<String> {
    if event == "all" {
        EventType::KNOWN
            .iter()
            .map(|e| e.as_str().to_owned())
            .collect()
    } else {
        vec![event.to_owned()]
    }
}

fn cmd_sample(args: SampleArgs) -> Result<u8, Failure> {
    let mut out = std::io::stdout().lock();
    if args.list {
        for event in EventType::KNOWN {
            let _ = writeln!(out, "{event}");
        }
        return Ok(0);
    }
    for event in event_names(&args.event) {
        let body = build_sample(&event, &args.sample)?.to_body();
        let text = String::from_utf8_lossy(&body);
        let text = if args.pretty {
            json::pretty(&text).unwrap_or_else(|| text.into_owned())
        } else {
            text.into_owned()
        };
        let _ = writeln!(out, "{text}");
    }
    Ok(0)
}

/// A fresh id: `<prefix>_` and 16 hex digits (time, process and a counter, hashed).
fn fresh_id(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{prefix}_{:016x}", hasher.finish())
}

async fn cmd_send(args: SendArgs) -> Result<u8, Failure> {
    let uri = net::parse_url(&args.url).map_err(Failure::usage)?;
    if let Some(id) = &args.webhook_id {
        http::HeaderValue::from_str(id).map_err(|_| {
            Failure::usage(format!(
                "--webhook-id {id:?} is not a valid header value: control characters (CR, LF, \
                 DEL, ...) are not allowed"
            ))
        })?;
    }
    let secret = one_secret(args.secret)?;
    let file_body = match &args.body {
        Some(path) => {
            if args.event != "email.delivered" || args.sample.message_id.is_some() {
                return Err(Failure::usage(
                    "--body sends the file as is: give no EVENT, --message-id or --set with it",
                ));
            }
            if !args.sample.set.is_empty() {
                return Err(Failure::usage("--set does not apply to --body"));
            }
            Some(Bytes::from(read_input(path)?))
        }
        None => None,
    };
    let now = unix_now();
    let (timestamp, timing) = if args.stale {
        (now.saturating_sub(600), "signed 600 s ago (--stale)")
    } else if args.future {
        (now + 600, "signed 600 s ahead (--future)")
    } else if let Some(t) = args.timestamp {
        (t, "signed at --timestamp")
    } else {
        (now, "")
    };
    let signing_secret = if args.wrong_secret {
        format!("{secret}_not_the_right_one")
    } else {
        secret
    };
    let timeout = Duration::from_secs(args.timeout.max(1));

    // The bodies to send, in order.
    let mut bodies: Vec<(String, Bytes)> = Vec::new();
    match file_body {
        Some(body) => {
            let label = Envelope::parse(body.clone())
                .map(|e| e.event_type().to_string())
                .unwrap_or_else(|_| "body file (not a Metigan envelope)".into());
            for _ in 0..args.repeat {
                bodies.push((label.clone(), body.clone()));
            }
        }
        None => {
            for event in event_names(&args.event) {
                for _ in 0..args.repeat {
                    let mut sample = build_sample(&event, &args.sample)?;
                    if args.sample.message_id.is_none() {
                        sample = sample.with_message_id(fresh_id("msg"));
                    }
                    let sample = sample.with_timestamp_ms(now * 1000);
                    let label =
                        format!("{event}, messageId {}", sample.message_id().unwrap_or("-"));
                    bodies.push((label, sample.to_body()));
                }
            }
        }
    }

    let mut faults = Vec::new();
    if !timing.is_empty() {
        faults.push(timing);
    }
    if args.wrong_secret {
        faults.push("wrong secret (--wrong-secret)");
    }
    if args.tamper {
        faults.push("body changed after signing (--tamper)");
    }
    let faults = if faults.is_empty() {
        String::new()
    } else {
        format!(" [{}]", faults.join(", "))
    };

    let copies = if args.duplicate { 2 } else { 1 };
    let total = bodies.len() * copies;
    let (mut sent, mut success) = (0usize, 0usize);
    let mut out = std::io::stdout().lock();
    for (label, body) in bodies {
        let webhook_id = args.webhook_id.clone().unwrap_or_else(|| fresh_id("wh"));
        let mut request = SignedRequest::new(body)
            .with_secret(signing_secret.as_str())
            .with_timestamp(timestamp)
            // Origin form (`/path?query`) on the request line, the authority in `Host`.
            .with_uri(uri.path_and_query().map_or("/", |pq| pq.as_str()))
            .with_webhook_id(webhook_id)
            .with_header(
                "user-agent",
                concat!("metigan-webhook-cli/", env!("CARGO_PKG_VERSION")),
            );
        if args.tamper {
            request = request.tampered();
        }
        for copy in 0..copies {
            let mut built = request.clone().try_build().map_err(|e| {
                Failure::usage(format!("cannot build the request from the arguments: {e}"))
            })?;
            sent += 1;
            let retry = if copy > 0 { ", duplicate" } else { "" };
            let _ = writeln!(
                out,
                "> POST {uri} ({label}, delivery {sent}/{total}{retry}){faults}"
            );
            let _ = out.flush();
            // No user name or password here: `parse_url` refuses URLs that have them.
            if let Some(host) = uri.authority() {
                if let Ok(value) = host.as_str().parse() {
                    built.headers_mut().insert(http::header::HOST, value);
                }
            }
            let (response, body) = net::send(&uri, built, timeout)
                .await
                .map_err(|e| Failure::io(e.to_string()))?;
            let status = response.status();
            let _ = writeln!(
                out,
                "< {:?} {} {}",
                response.version(),
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            );
            for (name, value) in response.headers() {
                let _ = writeln!(
                    out,
                    "< {name}: {}",
                    String::from_utf8_lossy(value.as_bytes())
                );
            }
            let _ = writeln!(out, "<");
            let text = String::from_utf8_lossy(&body);
            if !text.is_empty() {
                let _ = write!(out, "{text}");
                if !text.ends_with('\n') {
                    let _ = writeln!(out);
                }
            }
            let _ = writeln!(out);
            if status.is_success() {
                success += 1;
            }
        }
    }
    let _ = writeln!(
        out,
        "sent {sent}: {success} answered 2xx, {} did not",
        sent - success
    );
    Ok(if success == sent { 0 } else { 1 })
}

fn cmd_verify(args: VerifyArgs) -> Result<u8, Failure> {
    let secrets = secrets(args.secrets)?;
    let mut notes = Vec::new();
    let (signature, timestamp_header, body) = match (&args.request, &args.body) {
        (Some(path), _) => {
            let raw = read_input(path)?;
            let captured = net::parse_captured(&raw)
                .map_err(|e| Failure::usage(format!("{}: {e}", path.display())))?;
            notes.push(format!(
                "request: {} {}, {}-byte body{}",
                captured.method,
                captured.target,
                captured.body.len(),
                captured
                    .header("x-webhook-id")
                    .map(|id| format!(", X-Webhook-Id {}", String::from_utf8_lossy(id)))
                    .unwrap_or_default()
            ));
            notes.extend(captured.notes.iter().map(|n| format!("note: {n}")));
            (
                captured.header("x-webhook-signature").map(<[u8]>::to_vec),
                captured.header("x-webhook-timestamp").map(<[u8]>::to_vec),
                captured.body.clone(),
            )
        }
        (None, Some(path)) => {
            let Some(signature) = &args.signature else {
                return Err(Failure::usage(
                    "give the X-Webhook-Signature value with --signature (or a captured request \
                     with --request)",
                ));
            };
            (
                Some(signature.clone().into_bytes()),
                args.timestamp_header.clone().map(String::into_bytes),
                read_input(path)?,
            )
        }
        (None, None) => {
            return Err(Failure::usage(
                "give a body file (or `-` for stdin) with --signature, or a captured request \
                 with --request",
            ))
        }
    };
    let check = diagnose::Check {
        secrets,
        signature,
        timestamp_header,
        body,
        now: args.now.unwrap_or_else(unix_now),
        tolerance: (!args.ignore_timestamp).then_some(args.tolerance),
        body_limit: args.body_limit,
    };
    let report = diagnose::check(&check).map_err(Failure::usage)?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", report.verdict());
    for line in notes.iter().chain(&report.lines) {
        let _ = writeln!(out, "{line}");
    }
    if args.show_expected {
        for line in diagnose::expected(&check) {
            let _ = writeln!(out, "{line}");
        }
    }
    let _ = out.flush();
    Ok(if report.rejected.is_some() { 1 } else { 0 })
}

async fn cmd_listen(args: ListenArgs) -> Result<u8, Failure> {
    let secrets = secrets(args.secrets)?;
    let mut builder = MetiganSignatureLayer::builder()
        .secrets(&secrets)
        .tolerance(Duration::from_secs(args.tolerance))
        .body_limit(args.body_limit);
    if args.dedupe {
        builder = builder.deduplicate(Dedupe::in_memory());
    }
    let layer = builder
        .build()
        .map_err(|e| Failure::usage(format!("the secret (--secret or WEBHOOK_SECRET): {e}")))?;
    listen::run(listen::Listen {
        addr: SocketAddr::new(args.host, args.port),
        format: args.format,
        save: args.save,
        layer,
        body_limit: args.body_limit,
    })
    .await?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    // That `--help` never shows the secret (WEBHOOK_SECRET set) is checked in tests/cli.rs, in
    // a child process: setting the variable here would race with the other tests.

    #[test]
    fn set_parses_json_or_strings() {
        let options = SampleOptions {
            message_id: Some("m".into()),
            set: vec![
                "bounceType=soft".into(),
                "metadata.attempt=3".into(),
                "flag=true".into(),
            ],
        };
        let sample = build_sample("email.bounced", &options).unwrap();
        assert_eq!(sample.data()["bounceType"], "soft");
        assert_eq!(sample.data()["metadata"]["attempt"], 3);
        assert_eq!(sample.data()["flag"], true);
        assert_eq!(sample.message_id(), Some("m"));
        let bad = SampleOptions {
            message_id: None,
            set: vec!["novalue".into()],
        };
        assert_eq!(build_sample("x", &bad).unwrap_err().code, 2);
        assert_ne!(fresh_id("msg"), fresh_id("msg"));
    }
}
