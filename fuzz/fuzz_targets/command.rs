//! Command parser: the input fed whole and split at a position derived from
//! its first byte must give the same commands and errors, in strict and
//! lenient mode; every parsed command re-encodes to a line that parses back
//! to the same command.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailstorm_proto::encode::write_command;
use mailstorm_proto::{parse_command, ParserConfig, Status};
use mailstorm_proto_fuzz::{command_events, split_point};

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let at = split_point(first, input.len());
    let small = ParserConfig::strict(usize::from(first % 64) + 8);
    for cfg in [ParserConfig::default(), ParserConfig::lenient(512), small] {
        let whole = command_events(input, &[], &cfg);
        let split = command_events(input, &[at], &cfg);
        assert_eq!(whole, split, "split at {at} changed the result ({cfg:?})");
        let bytewise: Vec<usize> = (1..input.len().min(600)).collect();
        assert_eq!(
            command_events(input, &bytewise, &cfg),
            whole,
            "one byte at a time"
        );

        // Parse -> encode -> parse gives the same command.
        let mut buf = input;
        while let Ok(Status::Complete((cmd, n))) = parse_command(buf, &cfg) {
            let mut out = Vec::new();
            write_command(&mut out, &cmd);
            let again = parse_command(&out, &ParserConfig::strict(1 << 16));
            assert_eq!(again, Ok(Status::Complete((cmd, out.len()))), "{out:?}");
            buf = &buf[n..];
        }
    }
});
