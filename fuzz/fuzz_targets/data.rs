//! DATA receiver: the input fed whole and split at a position derived from
//! its first byte must give the same output, end and stats, in discard and
//! unstuff modes, strict and lenient, with and without a size limit; and the
//! input used as a message body survives DotStuffer -> DataReceiver intact
//! (CRLF-normalised).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailstorm_proto::data::DataConfig;
use mailstorm_proto::encode::DotStuffer;
use mailstorm_proto_fuzz::{crlf_normalise, data_feed, split_point};

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let at = split_point(first, input.len());
    let configs = [
        DataConfig::default(),
        DataConfig {
            max_size: 0,
            strict: false,
        },
        DataConfig {
            max_size: u64::from(first),
            strict: first & 1 == 0,
        },
    ];
    for cfg in configs {
        let whole = data_feed(input, &[], cfg, true);
        assert_eq!(
            data_feed(input, &[at], cfg, true),
            whole,
            "split at {at} ({cfg:?})"
        );
        let bytewise: Vec<usize> = (1..input.len().min(2000)).collect();
        assert_eq!(
            data_feed(input, &bytewise, cfg, true),
            whole,
            "one byte at a time"
        );
        for cuts in [&[][..], &[at][..]] {
            let d = data_feed(input, cuts, cfg, false);
            assert!(d.out.is_empty());
            assert_eq!(
                (d.end, d.stats),
                (whole.end, whole.stats),
                "discard ({cfg:?})"
            );
        }
    }

    // Round trip: stuff the input (whole and split) and receive it back.
    let mut stuffed = Vec::new();
    DotStuffer::encode(input, &mut stuffed);
    let mut s = DotStuffer::new();
    let mut pieced = Vec::new();
    s.push(&input[..at], &mut pieced);
    s.push(&input[at..], &mut pieced);
    s.finish(&mut pieced);
    assert_eq!(pieced, stuffed, "DotStuffer split at {at}");
    let expected = crlf_normalise(input);
    for cuts in [&[][..], &[split_point(first, stuffed.len())][..]] {
        let o = data_feed(&stuffed, cuts, DataConfig::default(), true);
        assert_eq!(o.end, Some(stuffed.len()));
        assert_eq!(o.out, expected);
        assert!(!o.stats.bare_lf && !o.stats.bare_cr && !o.stats.over_limit);
        assert_eq!(o.stats.bytes, expected.len() as u64);
    }
});
