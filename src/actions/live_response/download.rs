//! Results of live response commands: the download link (asked for afresh every time, never
//! stored, logged or returned), the download itself from the pre-signed link (no bearer token),
//! and the streaming gunzip of GetFile downloads.

use std::io::Write as _;
use std::time::Duration;

use flate2::write::MultiGzDecoder;

use tokio::time::Instant;
use url::Url;

use crate::actions::ActionContext;
use crate::defender::{DefenderError, endpoints};
pub use crate::defender::{link_host, presigned_link};
use crate::vault::{content_disposition_file_name, safe_file_name};

/// Time allowed after the live response for the link request, even past the action's timeout.
pub const LINK_GRACE: Duration = Duration::from_secs(120);
/// Longest a download may take (GetFile allows files up to 3 GB).
pub const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// Why a command's result could not be fetched.
#[derive(Debug)]
pub enum Fetch {
    /// Defender will not give this result (gone, never produced): a new live response may.
    Gone(String),
    /// This attempt failed (network, storage, vault); trying again with the event id may work.
    Failed(String),
    /// The link request was throttled past the deadline.
    Throttled(DefenderError),
}

/// A fresh download link for command `index` of live response `event_id`.
pub async fn result_link(
    ctx: &ActionContext,
    event_id: &str,
    index: u64,
    deadline: Instant,
) -> Result<Url, Fetch> {
    let client = ctx
        .asset
        .defender
        .with_deadline(deadline.max(Instant::now() + LINK_GRACE));
    let index_text = index.to_string();
    let call = endpoints::LIVE_RESPONSE_RESULT_LINK.at(&[event_id, &index_text]);
    let answer = match client.get(&call).await {
        Ok(v) => v,
        Err(e @ DefenderError::Throttled { .. }) => return Err(Fetch::Throttled(e)),
        Err(e @ DefenderError::NotFound { .. }) => {
            return Err(Fetch::Gone(format!(
                "Defender has no result for command {index}: {e}"
            )));
        }
        Err(e @ DefenderError::Api { status, .. })
            if (400..500).contains(&status) && status != 408 =>
        {
            return Err(Fetch::Gone(format!(
                "Defender refused the result of command {index}: {e}"
            )));
        }
        Err(e) => {
            return Err(Fetch::Failed(format!(
                "the download link of command {index} could not be obtained: {e}"
            )));
        }
    };
    presigned_link(&answer).map_err(|e| Fetch::Failed(format!("Defender answered {e}")))
}

/// Starts downloading from a pre-signed link: no bearer token goes with it, and errors never
/// show the URL.
pub async fn open(ctx: &ActionContext, link: Url) -> Result<reqwest::Response, Fetch> {
    let host = link_host(&link);
    allowed(ctx, &link).map_err(Fetch::Failed)?;
    let response = ctx
        .asset
        .defender
        .http()
        .get(link)
        .timeout(DOWNLOAD_TIMEOUT)
        .send()
        .await
        .map_err(|e| Fetch::Failed(format!("download from {host} failed: {}", e.without_url())))?;
    if !response.status().is_success() {
        return Err(Fetch::Failed(format!(
            "download from {host} answered HTTP {}",
            response.status().as_u16()
        )));
    }
    Ok(response)
}

/// Refuses (and logs) a link to a host outside the asset's `download_hosts`, or over plain
/// HTTP where that is not allowed; redirects are never followed (the client follows none).
pub fn allowed(ctx: &ActionContext, link: &Url) -> Result<(), String> {
    ctx.asset.config.download_hosts.check(link).map_err(|why| {
        tracing::warn!(
            asset = %ctx.asset.config.id,
            host = %link_host(link),
            scheme = link.scheme(),
            "download link refused: {why}"
        );
        format!("the download link was refused: {why}")
    })
}

/// Output of a gunzip past which `vault.max_gunzip_ratio` is checked.
pub const RATIO_FLOOR: u64 = 1 << 20;

/// Fails when a gunzipped download has produced more than `ratio` times its input (once past
/// [`RATIO_FLOOR`]).
pub fn check_ratio(produced: u64, received: u64, ratio: u64, host: &str) -> Result<(), String> {
    if produced > RATIO_FLOOR && produced > received.saturating_mul(ratio) {
        return Err(format!(
            "the download from {host} decompresses to more than {ratio} times its size \
             (vault.max_gunzip_ratio): stopped after {received} bytes received and {produced} \
             unpacked, nothing was stored"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Streaming gunzip

/// Input consumed per step while gunzipping: deflate expands at most about 1:1032, so one step
/// produces a few MiB at worst.
const GZIP_STEP: usize = 8 * 1024;
/// Longest raw prefix kept while a download might still turn out not to be gzip after all.
const FALLBACK_LIMIT: usize = 1 << 20;

/// The gzip magic bytes.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// A gzip stream broke after output was handed out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the download is a damaged gzip stream ({0})")]
pub struct Corrupt(pub String);

/// Where an [`Unpacker`] is.
enum Mode {
    /// Fewer than two bytes seen.
    Sniffing(Vec<u8>),
    /// Not gzip: bytes pass through.
    Raw,
    /// Gzip: bytes go through the decoder.
    Gzip {
        decoder: Box<MultiGzDecoder<Vec<u8>>>,
        /// Every input byte so far, while falling back to the raw bytes is still possible
        /// (nothing decoded handed out yet, and under [`FALLBACK_LIMIT`]).
        raw: Option<Vec<u8>>,
        /// The file name in the gzip header.
        name: Option<String>,
    },
}

/// Turns a download into the file's bytes as it arrives: gunzips it when it starts with the
/// gzip magic (`1f 8b`), passes it through otherwise, and falls back to the raw bytes when
/// what looked like gzip is not (an invalid header) before anything was decoded.
pub struct Unpacker {
    mode: Mode,
}

/// The end of an unpacked download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// The last bytes of the file.
    pub tail: Vec<u8>,
    /// The download was gzip and was gunzipped.
    pub gunzipped: bool,
    /// The file name of the gzip header, when there was one.
    pub gzip_name: Option<String>,
}

impl Default for Unpacker {
    fn default() -> Self {
        Unpacker::new()
    }
}

impl Unpacker {
    /// A new download.
    pub fn new() -> Unpacker {
        Unpacker {
            mode: Mode::Sniffing(Vec::new()),
        }
    }

    /// Whether the download is being gunzipped.
    pub fn is_gzip(&self) -> bool {
        matches!(self.mode, Mode::Gzip { .. })
    }

    /// Consumes a part of `input` (at least one byte when there is one); answers how much, and
    /// the file's bytes to store now.
    pub fn feed(&mut self, input: &[u8]) -> Result<(usize, Vec<u8>), Corrupt> {
        if input.is_empty() {
            return Ok((0, Vec::new()));
        }
        match &mut self.mode {
            Mode::Sniffing(seen) => {
                let take = input.len().min(GZIP_STEP);
                seen.extend_from_slice(&input[..take]);
                if seen.len() < 2 {
                    return Ok((take, Vec::new()));
                }
                let seen = std::mem::take(seen);
                if seen[..2] == GZIP_MAGIC {
                    self.mode = Mode::Gzip {
                        decoder: Box::new(MultiGzDecoder::new(Vec::new())),
                        raw: Some(Vec::new()),
                        name: None,
                    };
                    let out = self.gunzip(&seen)?;
                    Ok((take, out))
                } else {
                    self.mode = Mode::Raw;
                    Ok((take, seen))
                }
            }
            Mode::Raw => Ok((input.len(), input.to_vec())),
            Mode::Gzip { .. } => {
                let take = input.len().min(GZIP_STEP);
                let out = self.gunzip(&input[..take])?;
                Ok((take, out))
            }
        }
    }

    /// Feeds `bytes` to the decoder; on a decoding error falls back to the raw bytes when that
    /// is still possible.
    fn gunzip(&mut self, bytes: &[u8]) -> Result<Vec<u8>, Corrupt> {
        let Mode::Gzip { decoder, raw, name } = &mut self.mode else {
            return Ok(bytes.to_vec());
        };
        if let Some(r) = raw.as_mut() {
            r.extend_from_slice(bytes);
        }
        let result = decoder.write_all(bytes).and_then(|()| decoder.flush());
        if name.is_none()
            && let Some(n) = decoder.header().and_then(|h| h.filename())
        {
            *name = Some(String::from_utf8_lossy(n).into_owned());
        }
        match result {
            Ok(()) => {
                let out = std::mem::take(decoder.get_mut());
                if !out.is_empty() || raw.as_ref().is_some_and(|r| r.len() > FALLBACK_LIMIT) {
                    *raw = None;
                }
                Ok(out)
            }
            Err(e) => match raw.take() {
                Some(all) => {
                    self.mode = Mode::Raw;
                    Ok(all)
                }
                None => Err(Corrupt(e.to_string())),
            },
        }
    }

    /// The end of the download: the last bytes, and whether it was gunzipped. A gzip stream
    /// cut short is an error unless nothing was decoded yet (then the raw bytes are the file).
    pub fn finish(self) -> Result<Unpacked, Corrupt> {
        match self.mode {
            Mode::Sniffing(seen) => Ok(Unpacked {
                tail: seen,
                gunzipped: false,
                gzip_name: None,
            }),
            Mode::Raw => Ok(Unpacked {
                tail: Vec::new(),
                gunzipped: false,
                gzip_name: None,
            }),
            Mode::Gzip {
                mut decoder,
                raw,
                name,
            } => match decoder.try_finish() {
                Ok(()) => Ok(Unpacked {
                    tail: std::mem::take(decoder.get_mut()),
                    gunzipped: true,
                    gzip_name: name,
                }),
                Err(e) => match raw {
                    Some(all) => Ok(Unpacked {
                        tail: all,
                        gunzipped: false,
                        gzip_name: None,
                    }),
                    None => Err(Corrupt(format!("{e}; the stream ended early"))),
                },
            },
        }
    }
}

/// The name of a downloaded file: the `Content-Disposition` name (without `.gz` when the
/// download was gunzipped), else the gzip header's name, else the base name of the path on the
/// device; always reduced to a safe base name. `None` when none of them is usable.
pub fn file_name(
    content_disposition: Option<&str>,
    gunzipped: bool,
    gzip_name: Option<&str>,
    device_path: Option<&str>,
) -> Option<String> {
    let from_header = content_disposition
        .and_then(content_disposition_file_name)
        .and_then(|n| {
            if !gunzipped {
                return Some(n);
            }
            let cut = n
                .len()
                .checked_sub(3)
                .filter(|&i| n.is_char_boundary(i) && n[i..].eq_ignore_ascii_case(".gz"));
            match cut {
                Some(i) => safe_file_name(&n[..i]),
                None => Some(n),
            }
        });
    from_header
        .or_else(|| gzip_name.and_then(safe_file_name))
        .or_else(|| device_path.and_then(safe_file_name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compression, GzBuilder};

    fn gzip(data: &[u8], name: Option<&str>) -> Vec<u8> {
        let mut b = GzBuilder::new();
        if let Some(n) = name {
            b = b.filename(n);
        }
        let mut enc = b.write(Vec::new(), Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    /// Feeds `input` in pieces of `piece` bytes; returns the file's bytes and the end.
    fn unpack(input: &[u8], piece: usize) -> Result<(Vec<u8>, Unpacked), Corrupt> {
        let mut u = Unpacker::new();
        let mut out = Vec::new();
        for chunk in input.chunks(piece.max(1)) {
            let mut rest = chunk;
            while !rest.is_empty() {
                let (used, bytes) = u.feed(rest)?;
                assert!(used > 0);
                rest = &rest[used..];
                out.extend_from_slice(&bytes);
            }
        }
        let end = u.finish()?;
        out.extend_from_slice(&end.tail);
        Ok((out, end))
    }

    fn sample(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn gunzips_in_any_piece_size() {
        let data = sample(300_000);
        let gz = gzip(&data, Some("hosts"));
        for piece in [1, 2, 3, 100, 8192, 65536, gz.len()] {
            let (out, end) = unpack(&gz, piece).unwrap();
            assert_eq!(out, data, "piece {piece}");
            assert!(end.gunzipped);
            assert_eq!(end.gzip_name.as_deref(), Some("hosts"));
        }
    }

    #[test]
    fn multi_member_gzip() {
        let mut gz = gzip(b"first ", None);
        gz.extend(gzip(b"second", None));
        let (out, end) = unpack(&gz, 5).unwrap();
        assert_eq!(out, b"first second");
        assert!(end.gunzipped);
    }

    #[test]
    fn raw_bytes_pass_through() {
        for data in [b"plain text\n".to_vec(), vec![0x1f], vec![], sample(20_000)] {
            let (out, end) = unpack(&data, 3).unwrap();
            assert_eq!(out, data);
            assert!(!end.gunzipped);
        }
    }

    #[test]
    fn magic_without_a_valid_header_falls_back_to_raw() {
        // The magic, then a compression method that is not deflate.
        let mut data = vec![0x1f, 0x8b, 0x07, 0x00];
        data.extend_from_slice(b"not really gzip at all");
        let (out, end) = unpack(&data, 4).unwrap();
        assert_eq!(out, data);
        assert!(!end.gunzipped);
        // Only the magic and a few header bytes: the stream ends inside the header.
        let short = vec![0x1f, 0x8b, 0x08];
        let (out, end) = unpack(&short, 1).unwrap();
        assert_eq!(out, short);
        assert!(!end.gunzipped);
        // A valid header followed by garbage, before anything was decoded.
        let mut bad = gzip(b"x", None)[..10].to_vec();
        bad.extend_from_slice(&[0xff; 40]);
        let (out, end) = unpack(&bad, 7).unwrap();
        assert_eq!(out, bad);
        assert!(!end.gunzipped);
    }

    #[test]
    fn damage_after_output_is_an_error() {
        let data = sample(2_000_000);
        let mut b = GzBuilder::new().write(Vec::new(), Compression::none());
        b.write_all(&data).unwrap();
        let gz = b.finish().unwrap();
        // Cut short: output was already handed out.
        let cut = &gz[..gz.len() / 2];
        let e = unpack(cut, 65536).unwrap_err();
        assert!(e.to_string().contains("damaged gzip"), "{e}");
        // A wrong checksum at the end.
        let mut wrong = gz.clone();
        let n = wrong.len();
        wrong[n - 8] ^= 0xff;
        assert!(unpack(&wrong, 65536).is_err());
    }

    #[test]
    fn one_step_never_produces_more_than_a_few_mib() {
        let zeros = vec![0u8; 24 << 20];
        let gz = gzip(&zeros, None);
        let mut u = Unpacker::new();
        let mut rest = gz.as_slice();
        let mut total = 0usize;
        let mut largest = 0usize;
        while !rest.is_empty() {
            let (used, out) = u.feed(rest).unwrap();
            rest = &rest[used..];
            largest = largest.max(out.len());
            total += out.len();
        }
        total += u.finish().unwrap().tail.len();
        assert_eq!(total, zeros.len());
        assert!(largest <= 12 << 20, "largest step {largest}");
    }

    #[test]
    fn names_of_downloads() {
        let cd = |n: &str| format!("attachment; filename=\"{n}\"");
        assert_eq!(
            file_name(Some(&cd("hosts.gz")), true, None, None).as_deref(),
            Some("hosts")
        );
        assert_eq!(
            file_name(Some(&cd("hosts.GZ")), true, None, None).as_deref(),
            Some("hosts")
        );
        assert_eq!(
            file_name(Some(&cd("hosts.gz")), false, None, None).as_deref(),
            Some("hosts.gz"),
            "a download that was not gunzipped keeps its name"
        );
        assert_eq!(
            file_name(Some(&cd("..\\..\\evil.exe.gz")), true, None, None).as_deref(),
            Some("evil.exe")
        );
        assert_eq!(
            file_name(Some(&cd("/etc/passwd")), false, None, None).as_deref(),
            Some("passwd")
        );
        assert_eq!(
            file_name(
                Some("attachment; filename*=UTF-8''a%00b.txt.gz"),
                true,
                None,
                None
            )
            .as_deref(),
            Some("a_b.txt")
        );
        assert_eq!(
            file_name(Some(&cd("")), true, Some("from-header.bin"), None).as_deref(),
            Some("from-header.bin")
        );
        assert_eq!(
            file_name(Some(&cd("..")), true, Some("../"), Some("C:\\dir\\x.log")).as_deref(),
            Some("x.log")
        );
        assert_eq!(
            file_name(Some(&cd(".gz")), true, None, None).as_deref(),
            Some("gz")
        );
        assert_eq!(file_name(None, true, None, Some("C:\\dir\\")), None);
        assert_eq!(file_name(Some("inline"), false, Some("\u{0}"), None), None);
    }
}
