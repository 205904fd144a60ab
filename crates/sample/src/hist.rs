//! The summary both reports print for an HDR histogram, and the one
//! decoder of the histograms reports carry.

use std::io::Read;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// HdrHistogram's V2 cookies (uncompressed, deflate), as its serializer
/// writes them.
const V2_COOKIE: u32 = 0x1c84_9313;
const V2_DEFLATE_COOKIE: u32 = 0x1c84_9314;
/// A V2 header: cookie, payload length, normalizing offset, digits, lowest,
/// highest, integer-to-double ratio.
const V2_HEADER: usize = 40;

/// Most significant digits accepted: what both tools record with. Counts
/// then take under 0.5 MB whatever the range; 5 digits could take 48 MB.
const MAX_DIGITS: u32 = 3;

/// Largest decoded V2 histogram accepted. The tools' own are far smaller
/// (3 digits up to an hour in µs encodes in under 400 KB).
pub const MAX_HISTOGRAM_BYTES: usize = 16 << 20;

/// `h` in HdrHistogram's V2 deflate format, as reports and ledgers carry
/// it (and [`decode_v2`] reads it).
pub fn encode_v2(h: &Histogram<u64>) -> Vec<u8> {
    use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};
    let mut buf = Vec::new();
    // Serialising into a Vec cannot fail on I/O; only absurd histograms fail.
    let _ = V2DeflateSerializer::new().serialize(h, &mut buf);
    buf
}

/// Decodes a histogram in HdrHistogram's V2 format (deflate or plain), as
/// reports and ledgers carry it; `None` when it is not one.
///
/// Why not hdrhistogram's deserializer alone: it allocates the payload
/// length the header claims (up to 4 GiB) before reading it, so a 7 KB
/// report could take gigabytes. Here the input is inflated at most
/// [`MAX_HISTOGRAM_BYTES`], the claim checked against what is there, and
/// histograms of more than 3 significant digits refused.
pub fn decode_v2(bytes: &[u8]) -> Option<Histogram<u64>> {
    let word = |b: &[u8], at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
    };
    let inflated;
    let plain = match word(bytes, 0)? {
        V2_COOKIE => bytes,
        V2_DEFLATE_COOKIE => {
            let len = word(bytes, 4)? as usize;
            let deflated = bytes.get(8..8usize.checked_add(len)?)?;
            let mut out = Vec::new();
            flate2::read::ZlibDecoder::new(deflated)
                .take(MAX_HISTOGRAM_BYTES as u64 + 1)
                .read_to_end(&mut out)
                .ok()?;
            inflated = out;
            &inflated[..]
        }
        _ => return None,
    };
    if plain.len() > MAX_HISTOGRAM_BYTES
        || word(plain, 0)? != V2_COOKIE
        || word(plain, 4)? as usize > plain.len().saturating_sub(V2_HEADER)
        || word(plain, 12)? > MAX_DIGITS
    {
        return None;
    }
    hdrhistogram::serialization::Deserializer::new()
        .deserialize(&mut &plain[..])
        .ok()
}

/// Count, extremes, mean and the usual percentiles of a histogram, in its
/// own unit (all zero when the histogram is empty).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct HistSummary {
    /// Recorded values.
    pub count: u64,
    /// Smallest value.
    pub min: u64,
    /// Mean, rounded to one decimal.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile; `None` for reports whose shape has no `p999`
    /// (then the key is left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p999: Option<u64>,
    /// Largest value.
    pub max: u64,
}

impl HistSummary {
    /// Summarises `h`, with `p999`.
    pub fn of(h: &Histogram<u64>) -> HistSummary {
        if h.is_empty() {
            // An empty histogram's `min()` is not 0: say "nothing" plainly.
            return HistSummary {
                p999: Some(0),
                ..HistSummary::default()
            };
        }
        HistSummary {
            count: h.len(),
            min: h.min(),
            mean: (h.mean() * 10.0).round() / 10.0,
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: Some(h.value_at_quantile(0.999)),
            max: h.max(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_is_all_zero_and_p999_is_left_out_when_none() {
        let h = Histogram::<u64>::new(2).unwrap();
        // Only `min` differs from what the histogram itself says when empty.
        assert_eq!((h.mean(), h.value_at_quantile(0.999), h.max()), (0.0, 0, 0));
        let s = HistSummary::of(&h);
        assert_eq!((s.count, s.min, s.max, s.p999), (0, 0, 0, Some(0)));
        let json = serde_json::to_value(HistSummary { p999: None, ..s }).unwrap();
        assert!(json.get("p999").is_none(), "{json}");
        assert_eq!(json["min"], 0);
    }
}
