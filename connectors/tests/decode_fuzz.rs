//! Arbitrary bytes into every decoder: a value or a precise error, never a panic. Mutated
//! valid documents reach deeper into each parser than random bytes do.

use mallgate_connectors::decode::{Limits, decode};
use mallgate_connectors::spec::Decode;
use proptest::prelude::*;

const FORMATS: [Decode; 4] = [Decode::Json, Decode::Xml, Decode::Csv, Decode::X12];

const SEEDS: [(Decode, &str); 4] = [
    (
        Decode::Json,
        r#"{"products":[{"sku":6502197,"regularPrice":849.99,"upc":"036000291452","name":"TV"}],"totalPages":3}"#,
    ),
    (
        Decode::Xml,
        r#"<?xml version="1.0"?><R><P ID="0"><Rate>10.30</Rate><E/></P><P ID="1"><Rate>1&amp;2</Rate></P></R>"#,
    ),
    (Decode::Csv, "sku,price\nA-1,12.99\n\"B,2\",0.125\n"),
    (
        Decode::X12,
        "ST*846*0001~BIA*00*SI*D1*20261126~LIN*1*UP*036000291452~QTY*33*10*EA~SDQ*EA*92*DC1*4~CTT*1*10~SE*7*0001~",
    ),
];

fn check(format: Decode, bytes: &[u8]) {
    let limits = Limits {
        max_bytes: 1 << 16,
        max_depth: 32,
    };
    if let Err(e) = decode(format, bytes, &limits) {
        let message = e.to_string();
        assert!(message.starts_with("cannot decode "), "{message}");
        assert!(!e.is_retryable());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        for format in FORMATS {
            check(format, &bytes);
        }
    }

    #[test]
    fn mutated_documents(seed in 0..SEEDS.len(), edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..8)) {
        let (format, text) = SEEDS[seed];
        let mut bytes = text.as_bytes().to_vec();
        for (at, byte, op) in edits {
            let at = at % (bytes.len() + 1);
            match op {
                0 => bytes.insert(at, byte),
                1 if at < bytes.len() => { bytes.remove(at); }
                _ => bytes.truncate(at),
            }
        }
        check(format, &bytes);
    }
}

#[test]
fn seeds_decode() {
    for (format, text) in SEEDS {
        decode(format, text.as_bytes(), &Limits::default())
            .unwrap_or_else(|e| panic!("{}: {e}", format.name()));
    }
}
