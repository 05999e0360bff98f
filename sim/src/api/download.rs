//! Signed, short-lived download links (like Azure blob SAS URLs): live response command results
//! and investigation packages. They are served under `/download/{token}` without bearer auth;
//! the token itself (an HMAC over kind, action, command index and expiry) is the credential.

use std::io::{Read, Write};
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use flate2::{Compression, GzBuilder};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::actions::MachineAction;
use crate::scenario::DeviceFile;
use crate::state::{Clock, Sim};

/// Size of the pieces a streamed download is generated and compressed in.
const CHUNK: usize = 64 * 1024;

/// Compressed pieces buffered between the compressor and the connection.
const CHANNEL_DEPTH: usize = 4;

/// Domain separator so link signatures can never be confused with token signatures.
const LINK_DOMAIN: &str = "defender-sim/download-link/v1";

/// Routes serving download links (not behind the API guard).
pub fn routes() -> Router<Arc<Sim>> {
    Router::new().route("/download/{token}", get(download))
}

/// What a download link grants.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// The result of live response command `index` of an action.
    Result,
    /// The investigation package of a CollectInvestigationPackage action.
    Package,
}

impl Kind {
    fn as_str(&self) -> &'static str {
        match self {
            Kind::Result => "lr",
            Kind::Package => "pkg",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        match s {
            "lr" => Some(Kind::Result),
            "pkg" => Some(Kind::Package),
            _ => None,
        }
    }
}

/// The signed content of a link.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Grant {
    kind: Kind,
    action_id: String,
    index: usize,
    expires: i64,
    /// Random per link, so every request for a link yields a distinct one.
    nonce: u64,
}

impl Grant {
    fn payload(&self) -> String {
        format!(
            "{}|{}|{}|{}|{:016x}",
            self.kind.as_str(),
            self.action_id,
            self.index,
            self.expires,
            self.nonce
        )
    }
}

fn mac(sim: &Sim, payload: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail for the 32-byte key.
    let mut mac = match Hmac::<Sha256>::new_from_slice(&sim.signing_key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
    };
    mac.update(LINK_DOMAIN.as_bytes());
    mac.update(b"\n");
    mac.update(payload);
    mac
}

fn sign(sim: &Sim, grant: &Grant) -> String {
    let payload = grant.payload();
    let tag = mac(sim, payload.as_bytes()).finalize().into_bytes();
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(payload.as_bytes()),
        URL_SAFE_NO_PAD.encode(tag)
    )
}

/// Why a link was refused.
#[derive(Debug)]
enum Denied {
    /// Not a token this simulator signed, or altered.
    BadSignature,
    /// Signed, but past its expiry.
    Expired { expires: i64 },
}

fn verify(sim: &Sim, token: &str, now: i64) -> Result<Grant, Denied> {
    let (payload_b64, tag_b64) = token.split_once('.').ok_or(Denied::BadSignature)?;
    let payload = URL_SAFE_NO_PAD
        .decode(payload_b64)
        .map_err(|_| Denied::BadSignature)?;
    let tag = URL_SAFE_NO_PAD
        .decode(tag_b64)
        .map_err(|_| Denied::BadSignature)?;
    mac(sim, &payload)
        .verify_slice(&tag)
        .map_err(|_| Denied::BadSignature)?;
    let text = String::from_utf8(payload).map_err(|_| Denied::BadSignature)?;
    let mut parts = text.split('|');
    let (Some(kind), Some(action_id), Some(index), Some(expires), Some(nonce), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(Denied::BadSignature);
    };
    let grant = Grant {
        kind: Kind::parse(kind).ok_or(Denied::BadSignature)?,
        action_id: action_id.to_string(),
        index: index.parse().map_err(|_| Denied::BadSignature)?,
        expires: expires.parse().map_err(|_| Denied::BadSignature)?,
        nonce: u64::from_str_radix(nonce, 16).map_err(|_| Denied::BadSignature)?,
    };
    if now > grant.expires {
        return Err(Denied::Expired {
            expires: grant.expires,
        });
    }
    Ok(grant)
}

fn link(sim: &Sim, base: &str, kind: Kind, action_id: &str, index: usize) -> String {
    let lifetime = sim.world().scenario.download_link_lifetime_secs;
    let grant = Grant {
        kind,
        action_id: action_id.to_ascii_lowercase(),
        index,
        expires: sim.clock.unix() + i64::try_from(lifetime).unwrap_or(i64::MAX / 2),
        nonce: rand::random(),
    };
    format!(
        "{}/download/{}",
        base.trim_end_matches('/'),
        sign(sim, &grant)
    )
}

/// A fresh signed link to the result of live response command `index` of `action_id`; `base`
/// is `http://{host}` as the caller reached the simulator.
pub fn result_link(sim: &Sim, base: &str, action_id: &str, index: usize) -> String {
    link(sim, base, Kind::Result, action_id, index)
}

/// A fresh signed link to the investigation package of `action_id` (a small zip).
pub fn package_link(sim: &Sim, base: &str, action_id: &str) -> String {
    link(sim, base, Kind::Package, action_id, 0)
}

/// An Azure storage style XML error answer.
fn storage_error(
    status: StatusCode,
    code: &str,
    message: &str,
    detail: Option<String>,
    now_ms: i64,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let now = Clock::format_ms(now_ms);
    let detail = detail
        .map(|d| {
            format!(
                "<AuthenticationErrorDetail>{}</AuthenticationErrorDetail>",
                xml_escape(&d)
            )
        })
        .unwrap_or_default();
    let body = format!(
        "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>{}\nRequestId:{request_id}\nTime:{now}</Message>{detail}</Error>",
        xml_escape(message)
    );
    let mut resp = (status, body).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    if let Ok(v) = HeaderValue::from_str(code) {
        headers.insert("x-ms-error-code", v);
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert("x-ms-request-id", v);
    }
    resp
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn blob_not_found(now_ms: i64) -> Response {
    storage_error(
        StatusCode::NOT_FOUND,
        "BlobNotFound",
        "The specified blob does not exist.",
        None,
        now_ms,
    )
}

/// What a verified link resolves to, copied out of the world.
enum Payload {
    /// GetFile: the device file.
    File { path: String, file: DeviceFile },
    /// RunScript: the script's result document.
    Script(serde_json::Value),
    /// PutFile: a short acknowledgement.
    Put(serde_json::Value),
    /// Investigation package of an action.
    Package(Box<MachineAction>),
}

/// `GET /download/{token}`.
async fn download(State(sim): State<Arc<Sim>>, Path(token): Path<String>) -> Response {
    let now_ms = sim.clock.now_ms();
    let now = now_ms.div_euclid(1000);
    let grant = match verify(&sim, &token, now) {
        Ok(g) => g,
        Err(Denied::BadSignature) => {
            return storage_error(
                StatusCode::FORBIDDEN,
                "AuthenticationFailed",
                "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.",
                Some("Signature did not match.".to_string()),
                now_ms,
            );
        }
        Err(Denied::Expired { expires }) => {
            return storage_error(
                StatusCode::FORBIDDEN,
                "AuthenticationFailed",
                "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.",
                Some(format!(
                    "Signed expiry time [{}] must be after the current time [{}]",
                    Clock::format_ms(expires * 1000),
                    Clock::format_ms(now * 1000)
                )),
                now_ms,
            );
        }
    };
    let payload = match resolve(&sim, &grant) {
        Some(p) => p,
        None => return blob_not_found(now_ms),
    };
    match payload {
        Payload::File { path, file } => file_response(&path, &file, now_ms),
        Payload::Script(doc) | Payload::Put(doc) => json_response(&doc),
        Payload::Package(action) => package_response(&action, now_ms),
    }
}

/// Looks up what a grant points at (briefly locking the world).
fn resolve(sim: &Sim, grant: &Grant) -> Option<Payload> {
    let w = sim.world();
    let action = w.actions.get(&grant.action_id)?;
    if grant.kind == Kind::Package {
        return Some(Payload::Package(Box::new(action.clone())));
    }
    let command = action.commands.get(grant.index)?;
    let param = |key: &str| {
        command
            .params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    match command.command_type.as_str() {
        "GetFile" => {
            let path = param("Path")?;
            let file = device_file(&w.scenario, &action.machine_id, &path)?.clone();
            Some(Payload::File { path, file })
        }
        "RunScript" => {
            let name = param("ScriptName")?;
            let args = param("Args").unwrap_or_default();
            let lib = w.scenario.library_file(&name);
            let output = lib
                .and_then(|f| f.script_output.clone())
                .unwrap_or_else(|| default_script_output(&name, &args));
            let errors = lib
                .and_then(|f| f.script_errors.clone())
                .unwrap_or_default();
            let exit_code = lib.map_or(0, |f| f.exit_code);
            Some(Payload::Script(json!({
                "script_name": name,
                "exit_code": exit_code,
                "script_output": output,
                "script_errors": errors,
            })))
        }
        "PutFile" => {
            let name = param("FileName")?;
            Some(Payload::Put(json!({
                "file_name": name,
                "status": "Completed",
                "message": format!("{name} was copied to the device"),
            })))
        }
        _ => None,
    }
}

/// What RunScript prints when the library file names no output.
pub fn default_script_output(name: &str, args: &str) -> String {
    if args.is_empty() {
        format!("Ran {name}\n")
    } else {
        format!("Ran {name} {args}\n")
    }
}

/// The file at `path` (case-insensitive) on `machine_id`, per the scenario.
pub fn device_file<'a>(
    scenario: &'a crate::Scenario,
    machine_id: &str,
    path: &str,
) -> Option<&'a DeviceFile> {
    scenario
        .device_files
        .iter()
        .filter(|(m, _)| m.eq_ignore_ascii_case(machine_id))
        .flat_map(|(_, files)| files.iter())
        .find(|f| f.path.eq_ignore_ascii_case(path))
}

fn json_response(doc: &serde_json::Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        doc.to_string(),
    )
        .into_response()
}

/// The last component of a Windows or POSIX path.
fn base_name(path: &str) -> &str {
    match path.rsplit(['\\', '/']).next() {
        Some(n) if !n.is_empty() => n,
        _ => "file",
    }
}

/// `attachment; filename="..."` (with an RFC 5987 `filename*` when the name is not ASCII).
fn content_disposition(name: &str) -> HeaderValue {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut value = format!("attachment; filename=\"{ascii}\"");
    if ascii != name {
        let encoded: String = name
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        value.push_str(&format!("; filename*=UTF-8''{encoded}"));
    }
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

/// The gzip download of a device file (streamed, never held whole in memory).
fn file_response(path: &str, file: &DeviceFile, now_ms: i64) -> Response {
    let name = base_name(path).to_string();
    let (source, level): (Box<dyn Read + Send>, Compression) = if let Some(text) = &file.content {
        (
            Box::new(std::io::Cursor::new(text.clone().into_bytes())),
            Compression::default(),
        )
    } else if let Some(b64) = &file.content_base64 {
        match STANDARD.decode(b64.trim()) {
            Ok(bytes) => (
                Box::new(std::io::Cursor::new(bytes)),
                Compression::default(),
            ),
            Err(_) => {
                return storage_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    "The scenario file content is not valid base64.",
                    None,
                    now_ms,
                );
            }
        }
    } else if file.zeros {
        (
            Box::new(std::io::Read::take(
                std::io::repeat(0),
                file.size.unwrap_or(0),
            )),
            Compression::best(),
        )
    } else {
        // Generated content is pseudo-random, so deflate could only emit stored blocks for it
        // anyway; asking for them directly keeps multi-gigabyte downloads fast.
        (
            Box::new(GeneratedFile::new(path, file.size.unwrap_or(0))),
            Compression::none(),
        )
    };
    let body = gzip_body(source, level, name.clone());
    let mut resp = Response::new(body);
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        content_disposition(&format!("{name}.gz")),
    );
    resp
}

/// Streams `source` as one gzip member: a blocking task reads and compresses pieces of
/// [`CHUNK`] bytes and hands them over a bounded channel, so memory stays small for any size.
fn gzip_body(source: Box<dyn Read + Send>, level: Compression, name: String) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(CHANNEL_DEPTH);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = pump(source, level, &name, &tx) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Body::from_stream(stream)
}

fn pump(
    mut source: Box<dyn Read + Send>,
    level: Compression,
    name: &str,
    tx: &tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
) -> std::io::Result<()> {
    let header_name: Vec<u8> = name.bytes().filter(|b| *b != 0).collect();
    let mut enc = GzBuilder::new()
        .filename(header_name)
        .write(Vec::with_capacity(CHUNK), level);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = source.read(&mut buf)?;
        if n == 0 {
            break;
        }
        enc.write_all(&buf[..n])?;
        let out = std::mem::take(enc.get_mut());
        // A closed channel means the client went away: stop quietly.
        if !out.is_empty() && tx.blocking_send(Ok(Bytes::from(out))).is_err() {
            return Ok(());
        }
    }
    let rest = enc.finish()?;
    let _ = tx.blocking_send(Ok(Bytes::from(rest)));
    Ok(())
}

/// Deterministic content of a scenario file given only by `size`: a counter-based
/// pseudo-random byte sequence keyed by the (case-insensitive) path, readable in pieces.
pub struct GeneratedFile {
    seed: u64,
    pos: u64,
    len: u64,
}

impl GeneratedFile {
    /// The content of the file at `path` with `len` bytes, from its start.
    pub fn new(path: &str, len: u64) -> GeneratedFile {
        // FNV-1a over the lower-cased path.
        let seed = path
            .to_lowercase()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
            });
        GeneratedFile { seed, pos: 0, len }
    }

    fn word(&self, block: u64) -> [u8; 8] {
        // splitmix64 of (seed + block * gamma): each 8-byte block is independent of the others.
        let mut z = self
            .seed
            .wrapping_add(block.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)).to_le_bytes()
    }
}

impl Read for GeneratedFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let mut i = 0;
        while i < n {
            let word = self.word(self.pos / 8);
            let start = (self.pos % 8) as usize;
            let take = (8 - start).min(n - i);
            buf[i..i + take].copy_from_slice(&word[start..start + take]);
            i += take;
            self.pos += take as u64;
        }
        Ok(n)
    }
}

/// The investigation package: a small stored (uncompressed) zip of text files.
fn package_response(action: &MachineAction, now_ms: i64) -> Response {
    let host = action
        .computer_dns_name
        .clone()
        .unwrap_or_else(|| action.machine_id.clone());
    let summary = format!(
        "Investigation package\r\nMachine: {host}\r\nMachine id: {}\r\nAction id: {}\r\nRequested by: {}\r\nComment: {}\r\nCollected: {}\r\n",
        action.machine_id,
        action.id,
        action.requestor,
        action.comment,
        Clock::format_ms(action.last_update_ms(now_ms)),
    );
    let processes = "Name,Id,Path\r\nSystem,4,\r\nsvchost.exe,812,C:\\Windows\\System32\\svchost.exe\r\nexplorer.exe,4120,C:\\Windows\\explorer.exe\r\n";
    let zip = stored_zip(
        &[
            ("CollectionSummaryReport.txt", summary.as_bytes()),
            ("Processes/processes.csv", processes.as_bytes()),
        ],
        now_ms,
    );
    let mut resp = (StatusCode::OK, zip).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zip"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        content_disposition(&format!("investigation-package-{}.zip", action.id)),
    );
    resp
}

/// MS-DOS (time, date) of a sim time, as zip headers carry them.
fn dos_time_date(ms: i64) -> (u16, u16) {
    let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let year = (t.year() - 1980).clamp(0, 127) as u16;
    let time =
        (u16::from(t.hour()) << 11) | (u16::from(t.minute()) << 5) | u16::from(t.second() / 2);
    let date = (year << 9) | (u16::from(u8::from(t.month())) << 5) | u16::from(t.day());
    (time, date)
}

/// Builds a zip archive whose entries are stored without compression.
fn stored_zip(entries: &[(&str, &[u8])], now_ms: i64) -> Vec<u8> {
    let (dos_time, dos_date) = dos_time_date(now_ms);
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let mut crc = flate2::Crc::new();
        crc.update(data);
        let crc = crc.sum();
        let offset = out.len() as u32;
        let size = data.len() as u32;
        let name_len = name.len() as u16;
        // Local file header.
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        out.extend_from_slice(&20u16.to_le_bytes()); // version needed
        out.extend_from_slice(&0u16.to_le_bytes()); // flags
        out.extend_from_slice(&0u16.to_le_bytes()); // method: stored
        out.extend_from_slice(&dos_time.to_le_bytes());
        out.extend_from_slice(&dos_date.to_le_bytes());
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&name_len.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes()); // extra length
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        // Central directory entry.
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&20u16.to_le_bytes()); // version made by
        central.extend_from_slice(&20u16.to_le_bytes()); // version needed
        central.extend_from_slice(&0u16.to_le_bytes()); // flags
        central.extend_from_slice(&0u16.to_le_bytes()); // method
        central.extend_from_slice(&dos_time.to_le_bytes());
        central.extend_from_slice(&dos_date.to_le_bytes());
        central.extend_from_slice(&crc.to_le_bytes());
        central.extend_from_slice(&size.to_le_bytes());
        central.extend_from_slice(&size.to_le_bytes());
        central.extend_from_slice(&name_len.to_le_bytes());
        central.extend_from_slice(&0u16.to_le_bytes()); // extra length
        central.extend_from_slice(&0u16.to_le_bytes()); // comment length
        central.extend_from_slice(&0u16.to_le_bytes()); // disk number
        central.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
        central.extend_from_slice(&0u32.to_le_bytes()); // external attributes
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let central_offset = out.len() as u32;
    let central_size = central.len() as u32;
    let count = entries.len() as u16;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes()); // this disk
    out.extend_from_slice(&0u16.to_le_bytes()); // disk with the central directory
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&central_size.to_le_bytes());
    out.extend_from_slice(&central_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes()); // comment length
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_content_is_deterministic_and_piecewise() {
        let mut whole = vec![0u8; 1000];
        let n = GeneratedFile::new("C:\\Temp\\big.bin", 1000)
            .read(&mut whole)
            .unwrap();
        assert_eq!(n, 1000);
        let mut pieces = Vec::new();
        let mut g = GeneratedFile::new("c:\\temp\\BIG.bin", 1000);
        let mut buf = [0u8; 7];
        loop {
            let n = g.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            pieces.extend_from_slice(&buf[..n]);
        }
        assert_eq!(whole, pieces);
        let mut other = vec![0u8; 1000];
        GeneratedFile::new("C:\\Temp\\other.bin", 1000)
            .read_exact(&mut other)
            .unwrap();
        assert_ne!(whole, other);
    }

    #[test]
    fn base_names() {
        assert_eq!(
            base_name("C:\\Windows\\System32\\drivers\\etc\\hosts"),
            "hosts"
        );
        assert_eq!(base_name("/var/log/syslog"), "syslog");
        assert_eq!(base_name("C:\\dir\\"), "file");
    }

    #[test]
    fn disposition_escapes_odd_names() {
        let v = content_disposition("a\"b.gz");
        assert_eq!(
            v.to_str().unwrap(),
            "attachment; filename=\"a_b.gz\"; filename*=UTF-8''a%22b.gz"
        );
    }
}
