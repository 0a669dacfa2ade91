//! The `--hist FILE` format: an HdrHistogram interval log (format 1.3) whose
//! histograms are V2-compressed and base64-encoded, as HdrHistogram's own
//! `HistogramLogProcessor` reads them, plus one `#[sockload: {...}]` comment
//! line carrying the counts, so `sockload merge` can add runs up.
//!
//! ```text
//! #[Histogram log format version 1.3]
//! #[sockload: {"format_version":1,"ok":...,"errors":{...},"measured_s":...,...}]
//! #[StartTime: 1700000000.123 (seconds since epoch)]
//! #[BaseTime: 1700000000.123 (seconds since epoch)]
//! "StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"
//! #[MaxValueDivisor: 1000000.000]
//! 0.000,10.001,0.004,HISTFAAAA...
//! Tag=uncorrected,0.000,10.001,0.002,HISTFAAAA...
//! ```
//!
//! Values are microseconds. The untagged histogram is the latency
//! (open loop: from the intended send time); `Tag=uncorrected` appears in
//! open-loop runs only.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context as _};
use base64::Engine as _;
use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriterBuilder, LogEntry, Tag,
};
use hdrhistogram::serialization::{Deserializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::report::config_json;
use super::stats::{ErrorKind, Summary};
use super::Config;

/// Version of the `#[sockload: ...]` metadata line.
pub(crate) const META_VERSION: u32 = 1;
const META_PREFIX: &str = "#[sockload: ";
const UNCORRECTED: &str = "uncorrected";

/// The counts a histogram alone cannot carry.
#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    format_version: u32,
    ok: u64,
    errors: BTreeMap<String, u64>,
    #[serde(default)]
    error_samples: BTreeMap<String, String>,
    measured_s: f64,
    requests_per_s: f64,
    ok_per_s: f64,
    open_loop: bool,
    #[serde(default)]
    config: serde_json::Value,
    #[serde(default)]
    bytes_sent: u64,
    #[serde(default)]
    bytes_received: u64,
    /// When the run started, in seconds since the Unix epoch.
    #[serde(default)]
    started_at: Option<f64>,
}

/// Writes `summary` (and `cfg`, for the record) to `file`.
pub(crate) fn write(
    mut file: std::fs::File,
    cfg: &Config,
    summary: &Summary,
) -> anyhow::Result<()> {
    use std::io::Write as _;
    file.write_all(&render(Some(cfg), summary)?)?;
    file.sync_all()?;
    Ok(())
}

/// The file's text.
pub(crate) fn render(cfg: Option<&Config>, s: &Summary) -> anyhow::Result<Vec<u8>> {
    let meta = Meta {
        format_version: META_VERSION,
        ok: s.ok,
        errors: ErrorKind::ALL
            .iter()
            .map(|k| (k.name().to_string(), s.errors_of(*k)))
            .collect(),
        error_samples: ErrorKind::ALL
            .iter()
            .filter_map(|k| Some((k.name().to_string(), s.samples[*k as usize].clone()?)))
            .collect(),
        measured_s: s.measured.as_secs_f64(),
        requests_per_s: s.requests_per_s,
        ok_per_s: s.ok_per_s,
        open_loop: s.uncorrected.is_some(),
        config: cfg.map(config_json).unwrap_or_default(),
        bytes_sent: s.bytes_sent,
        bytes_received: s.bytes_received,
        started_at: s
            .started_at
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64()),
    };
    // A period longer than the epoch (from a hostile file) starts at it.
    let began = SystemTime::now()
        .checked_sub(s.measured)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut out = Vec::new();
    let mut ser = V2DeflateSerializer::new();
    IntervalLogWriterBuilder::new()
        .add_comment("[Histogram log format version 1.3]")
        .add_comment(&format!("[sockload: {}]", serde_json::to_string(&meta)?))
        .with_start_time(began)
        .with_base_time(began)
        .begin_log_with(&mut out, &mut ser)?;
    out.extend_from_slice(b"\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n");
    let mut w = IntervalLogWriterBuilder::new()
        .with_max_value_divisor(1e6)
        .begin_log_with(&mut out, &mut ser)?;
    let err = |e| anyhow!("serialise histogram: {e}");
    w.write_histogram(&s.latency, Duration::ZERO, s.measured, None)
        .map_err(err)?;
    if let Some(h) = &s.uncorrected {
        w.write_histogram(h, Duration::ZERO, s.measured, Tag::new(UNCORRECTED))
            .map_err(err)?;
    }
    Ok(out)
}

/// Reads a file written by `--hist` (or any HdrHistogram interval log: without
/// the sockload line, every recorded value counts as one ok request).
pub(crate) fn read(path: &Path) -> anyhow::Result<Summary> {
    let text = std::fs::read(path)?;
    parse(&text)
}

pub(crate) fn parse(text: &[u8]) -> anyhow::Result<Summary> {
    let meta = find_meta(text)?;
    let mut latency = Histogram::<u64>::new(3)?;
    let mut uncorrected: Option<Histogram<u64>> = None;
    let mut log_length = Duration::ZERO;
    let mut intervals = 0;
    for entry in IntervalLogIterator::new(text) {
        let LogEntry::Interval(iv) =
            entry.map_err(|e| anyhow!("not an HdrHistogram interval log: {e:?}"))?
        else {
            continue;
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(iv.encoded_histogram())
            .context("histogram is not valid base64")?;
        let h = decode_histogram(&bytes)?;
        let into = match iv.tag().map(|t| t.as_str()) {
            None => {
                let end = iv
                    .start_timestamp()
                    .checked_add(iv.duration())
                    .ok_or_else(|| anyhow!("an interval ends past the end of time"))?;
                log_length = log_length.max(end);
                &mut latency
            }
            Some(UNCORRECTED) => uncorrected.get_or_insert(Histogram::new(3)?),
            Some(_) => continue,
        };
        into.add(&h).map_err(|e| anyhow!("add histogram: {e:?}"))?;
        intervals += 1;
    }
    if intervals == 0 {
        bail!("no histogram in the file");
    }
    let mut s = Summary::empty(false);
    s.runs = 1;
    match meta {
        Some(m) => apply_meta(&mut s, m)?,
        None => {
            s.ok = latency.len();
            s.measured = log_length;
            if !log_length.is_zero() {
                s.requests_per_s = s.ok as f64 / log_length.as_secs_f64();
                s.ok_per_s = s.requests_per_s;
            }
        }
    }
    s.latency = latency;
    s.uncorrected = uncorrected;
    Ok(s)
}

/// HdrHistogram's V2 encodings: cookies and the plain header's length.
const V2_COOKIE: u32 = 0x1c84_9313;
const V2_COMPRESSED_COOKIE: u32 = 0x1c84_9314;
const V2_HEADER: usize = 40;
/// The most counts bytes a histogram may carry (plain or inflated): more
/// than 5 significant digits over the whole u64 range take.
const MAX_PAYLOAD: usize = 64 << 20;

/// Decodes one V2 histogram, plain or deflated, after checking what
/// HdrHistogram's decoder trusts: it allocates the payload length a
/// header claims before reading it (4 GiB for a 40-byte input), and
/// inflates without a bound. Here a plain payload must fit in the bytes
/// that follow its header, and a deflated one inflate to at most
/// [`MAX_PAYLOAD`] and a plain histogram.
fn decode_histogram(bytes: &[u8]) -> anyhow::Result<Histogram<u64>> {
    decode_within(bytes, MAX_PAYLOAD)
}

/// [`decode_histogram`] with `max_payload` for [`MAX_PAYLOAD`].
fn decode_within(bytes: &[u8], max_payload: usize) -> anyhow::Result<Histogram<u64>> {
    use std::io::Read as _;
    let be32 = |b: &[u8], at: usize| {
        b.get(at..at + 4)
            .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
    };
    let inflated;
    let plain = if be32(bytes, 0) == Some(V2_COMPRESSED_COOKIE) {
        let body = bytes.get(8..).unwrap_or_default();
        let len = be32(bytes, 4).map_or(0, |n| n as usize).min(body.len());
        let limit = V2_HEADER + max_payload;
        let mut out = Vec::new();
        flate2::read::ZlibDecoder::new(&body[..len])
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .context("compressed histogram does not inflate")?;
        if out.len() > limit {
            bail!("compressed histogram inflates to more than {limit} bytes");
        }
        if be32(&out, 0) != Some(V2_COOKIE) {
            bail!("compressed histogram does not hold a V2 histogram");
        }
        inflated = out;
        &inflated[..]
    } else {
        bytes
    };
    if be32(plain, 0) == Some(V2_COOKIE) {
        let claimed = be32(plain, 4).map_or(0, |n| n as usize);
        let held = plain.len().saturating_sub(V2_HEADER);
        if claimed > held {
            bail!("histogram claims {claimed} bytes of counts but holds {held}");
        }
    }
    Deserializer::new()
        .deserialize(&mut &plain[..])
        .map_err(|e| anyhow!("histogram does not decode: {e:?}"))
}

fn find_meta(text: &[u8]) -> anyhow::Result<Option<Meta>> {
    let text = std::str::from_utf8(text).context("file is not UTF-8 text")?;
    let Some(line) = text.lines().find(|l| l.starts_with(META_PREFIX)) else {
        return Ok(None);
    };
    let json = line[META_PREFIX.len()..]
        .strip_suffix(']')
        .unwrap_or_default();
    let meta: Meta = serde_json::from_str(json).context("malformed #[sockload: ...] line")?;
    if meta.format_version != META_VERSION {
        bail!(
            "#[sockload: ...] format_version {} is not {META_VERSION}",
            meta.format_version
        );
    }
    Ok(Some(meta))
}

fn apply_meta(s: &mut Summary, m: Meta) -> anyhow::Result<()> {
    s.ok = m.ok;
    s.bytes_sent = m.bytes_sent;
    s.bytes_received = m.bytes_received;
    s.started_at = m
        .started_at
        .and_then(|t| Duration::try_from_secs_f64(t).ok())
        .and_then(|d| SystemTime::UNIX_EPOCH.checked_add(d));
    for (name, n) in m.errors {
        let kind =
            ErrorKind::from_name(&name).ok_or_else(|| anyhow!("unknown error kind {name:?}"))?;
        s.errors[kind as usize] = n;
    }
    for (name, text) in m.error_samples {
        if let Some(kind) = ErrorKind::from_name(&name) {
            s.samples[kind as usize] = Some(text);
        }
    }
    if s.errors
        .iter()
        .try_fold(s.ok, |a, &n| a.checked_add(n))
        .is_none()
    {
        bail!("#[sockload: ...] counts add up to more than 2^64");
    }
    s.measured = Duration::try_from_secs_f64(m.measured_s).context("bad measured_s")?;
    for (name, rate) in [
        ("requests_per_s", m.requests_per_s),
        ("ok_per_s", m.ok_per_s),
    ] {
        if !(rate.is_finite() && rate >= 0.0) {
            bail!("#[sockload: ...] {name} {rate} is not a rate");
        }
    }
    s.requests_per_s = m.requests_per_s;
    s.ok_per_s = m.ok_per_s;
    Ok(())
}

/// The reader's contract on arbitrary bytes (the fuzz target `histfile`
/// and the unit tests call it): `data` is read twice, as a whole file and
/// as the one histogram of an otherwise well-formed file (so the fuzzer
/// reaches the histogram decoder through base64). Neither read panics or
/// allocates more than the file could describe; a refusal has a message;
/// an accepted file is one run whose counts add up without overflow, whose
/// rates are finite and not negative, whose ok count (without a
/// `#[sockload: ...]` line) is its number of values, and which writes out
/// to a file that reads back the same.
///
/// # Panics
///
/// When the contract is broken.
pub(crate) fn check_parse(data: &[u8]) {
    check_file(data);
    let mut file = b"#[Histogram log format version 1.3]\n\
        #[StartTime: 1700000000.000 (seconds since epoch)]\n\
        \"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n\
        0.000,1.000,0.000,"
        .to_vec();
    file.extend_from_slice(
        base64::engine::general_purpose::STANDARD
            .encode(data)
            .as_bytes(),
    );
    file.push(b'\n');
    check_file(&file);
}

fn check_file(text: &[u8]) {
    let s = match parse(text) {
        Ok(s) => s,
        Err(e) => {
            assert!(!format!("{e:#}").trim().is_empty(), "an empty error");
            return;
        }
    };
    assert_eq!(s.runs, 1);
    let total = s.errors.iter().try_fold(s.ok, |a, &n| a.checked_add(n));
    assert!(
        total.is_some(),
        "ok {} and errors {:?} overflow",
        s.ok,
        s.errors
    );
    for r in [s.requests_per_s, s.ok_per_s] {
        assert!(r.is_finite() && r >= 0.0, "rate {r}");
    }
    if matches!(find_meta(text), Ok(None)) {
        assert_eq!(s.ok, s.latency.len(), "ok is not the number of values");
    }
    let again = render(None, &s).expect("an accepted file writes out");
    let back = parse(&again).unwrap_or_else(|e| panic!("written file does not read: {e:#}"));
    assert_eq!(
        (back.ok, back.errors, &back.samples),
        (s.ok, s.errors, &s.samples)
    );
    assert_eq!(
        (back.bytes_sent, back.bytes_received),
        (s.bytes_sent, s.bytes_received)
    );
    let gap = back.measured.abs_diff(s.measured).as_secs_f64();
    assert!(
        gap <= 1e-9 + s.measured.as_secs_f64() * 1e-15,
        "measured {:?} became {:?}",
        s.measured,
        back.measured
    );
    assert_eq!(back.started_at.is_some(), s.started_at.is_some());
    assert!(back.latency == s.latency, "the latency histogram changed");
    assert!(
        back.uncorrected == s.uncorrected,
        "the uncorrected histogram changed"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(values: &[u64], open_loop: bool) -> Summary {
        let mut s = Summary::empty(open_loop);
        s.runs = 1;
        for v in values {
            s.latency.record(*v).unwrap();
            if let Some(u) = &mut s.uncorrected {
                u.record(*v / 2).unwrap();
            }
        }
        s.ok = values.len() as u64;
        s.errors[ErrorKind::Reset as usize] = 2;
        s.samples[ErrorKind::Reset as usize] = Some("receive from x: reset".into());
        s.measured = Duration::from_millis(1500);
        s.requests_per_s = (s.ok + 2) as f64 / 1.5;
        s
    }

    #[test]
    fn files_round_trip_counts_and_histograms() {
        let s = summary(&[10, 20, 30, 4000, 5_000_000], true);
        let text = render(None, &s).unwrap();
        let back = parse(&text).unwrap();
        assert_eq!(back.ok, 5);
        assert_eq!(back.errors, s.errors);
        assert_eq!(back.samples, s.samples);
        assert_eq!(back.measured, s.measured);
        assert_eq!(back.latency, s.latency);
        assert_eq!(back.uncorrected, s.uncorrected);
    }

    #[test]
    fn the_file_is_a_standard_interval_log() {
        let text = String::from_utf8(render(None, &summary(&[1, 2, 3], false)).unwrap()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "#[Histogram log format version 1.3]");
        assert!(lines.iter().any(|l| l.starts_with("\"StartTimestamp\"")));
        let data = lines.last().unwrap();
        assert!(data.starts_with("0.000,1.500,0.000,HISTF"), "{data}");
        assert!(
            !text.contains("Tag="),
            "closed-loop runs have one histogram"
        );
    }

    #[test]
    fn plain_hdr_logs_without_sockload_line_count_values_as_ok() {
        let text = String::from_utf8(render(None, &summary(&[7, 8], false)).unwrap()).unwrap();
        let plain: String = text
            .lines()
            .filter(|l| !l.starts_with(META_PREFIX))
            .map(|l| format!("{l}\n"))
            .collect();
        let s = parse(plain.as_bytes()).unwrap();
        assert_eq!((s.ok, s.error_count()), (2, 0));
        assert!(parse(b"# nothing here\n").is_err());
    }

    /// A plain V2 histogram header (3 digits, values 1 to 2) claiming
    /// `claimed` bytes of counts, followed by `held` bytes.
    fn v2_header(claimed: u32, held: usize) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&V2_COOKIE.to_be_bytes());
        b.extend_from_slice(&claimed.to_be_bytes());
        b.extend_from_slice(&0u32.to_be_bytes());
        b.extend_from_slice(&3u32.to_be_bytes());
        b.extend_from_slice(&1u64.to_be_bytes());
        b.extend_from_slice(&2u64.to_be_bytes());
        b.extend_from_slice(&1f64.to_be_bytes());
        b.resize(b.len() + held, 0);
        b
    }

    fn deflated(inner: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(inner).unwrap();
        let body = z.finish().unwrap();
        let mut b = V2_COMPRESSED_COOKIE.to_be_bytes().to_vec();
        b.extend_from_slice(&(body.len() as u32).to_be_bytes());
        b.extend_from_slice(&body);
        b
    }

    #[test]
    fn histograms_claiming_more_than_they_hold_are_refused_before_allocating() {
        // HdrHistogram's decoder would zero 4 GiB for each of these.
        let plain = v2_header(u32::MAX, 0);
        let e = decode_histogram(&plain).unwrap_err().to_string();
        assert!(
            e.contains("claims 4294967295 bytes of counts but holds 0"),
            "{e}"
        );
        let e = decode_histogram(&deflated(&plain)).unwrap_err().to_string();
        assert!(e.contains("claims 4294967295"), "{e}");
        let nested = deflated(&deflated(&v2_header(0, 0)));
        let e = decode_histogram(&nested).unwrap_err().to_string();
        assert!(e.contains("does not hold a V2 histogram"), "{e}");
        // A small limit: 64 MiB in a unit test upsets the memory tests.
        let bomb = deflated(&v2_header(0, 1 << 20));
        assert!(bomb.len() < 10_000);
        let e = decode_within(&bomb, (1 << 20) - 1).unwrap_err().to_string();
        assert!(e.contains("inflates to more than"), "{e}");
        assert!(decode_within(&bomb, 1 << 20).is_ok());
        assert!(decode_histogram(&v2_header(0, 0)).is_ok_and(|h| h.is_empty()));
        assert!(decode_histogram(&deflated(&v2_header(0, 0))).is_ok());
        for b in [plain, nested, bomb] {
            check_parse(&b);
        }
    }

    /// The closed-loop sample file with `from` replaced by `to`.
    fn edited(from: &str, to: &str) -> Vec<u8> {
        let text = String::from_utf8(render(None, &summary(&[1, 2, 3], false)).unwrap()).unwrap();
        assert!(text.contains(from), "{text}");
        text.replacen(from, to, 1).into_bytes()
    }

    #[test]
    fn hostile_counts_times_and_rates_neither_panic_nor_pass() {
        // The first three panicked (SystemTime or Duration overflowing);
        // the last two passed nonsense on to the report.
        let far = edited("\"started_at\":null", "\"started_at\":1e19");
        assert_eq!(parse(&far).unwrap().started_at, None);
        check_parse(&far);
        let end = edited(
            "0.000,1.500,",
            "18446744073709551615.0,18446744073709551615.0,",
        );
        assert!(format!("{:#}", parse(&end).unwrap_err()).contains("end of time"));
        check_parse(&end);
        let long = edited("\"measured_s\":1.5", "\"measured_s\":1e19");
        let back = parse(&render(None, &parse(&long).unwrap()).unwrap()).unwrap();
        assert_eq!(
            back.measured,
            Duration::from_secs(10_000_000_000_000_000_000)
        );
        check_parse(&long);
        let many = edited("\"ok\":3", "\"ok\":18446744073709551615");
        assert!(format!("{:#}", parse(&many).unwrap_err()).contains("more than 2^64"));
        check_parse(&many);
        let backwards = edited("\"ok_per_s\":0.0", "\"ok_per_s\":-1.0");
        assert!(format!("{:#}", parse(&backwards).unwrap_err()).contains("ok_per_s -1"));
        check_parse(&backwards);
    }

    #[test]
    fn the_fuzz_contract_holds_on_sample_files() {
        let open = render(None, &summary(&[10, 20, 30, 4000, 5_000_000], true)).unwrap();
        let closed = render(None, &summary(&[1, 2, 3], false)).unwrap();
        let histogram = |file: &[u8]| {
            let line = file
                .split(|&b| b == b'\n')
                .rfind(|l| !l.is_empty())
                .unwrap();
            let b64 = line.rsplit(|&b| b == b',').next().unwrap();
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap()
        };
        for data in [&b""[..], b"\n", b"HISTF", &open, &closed, &histogram(&open)] {
            check_parse(data);
        }
        for cut in (0..closed.len()).step_by(7) {
            check_parse(&closed[..cut]);
        }
    }
}
