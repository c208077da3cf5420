//! Fuzzes the peer wire codec: the handshake, every message (BEP 52's hash messages too), the
//! extended handshake and the `ut_metadata` and `ut_pex` payloads,
//! decoded from arbitrary bytes split in two at a position taken from the input. Whatever
//! decodes must re-encode to exactly the bytes it came from (extended handshakes, which drop
//! unknown keys, must re-encode to something that decodes to the same value).
//!
//! Input layout: byte 0 configures the decoder, bytes 1..3 choose the split, the rest is the
//! stream. Run with `cargo fuzz run wire` from the repository root.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringtorrent::core::wire::{
    Decoded, Decoder, ExtendedHandshake, Handshake, Message, MetadataMsg, PexMsg, SplitBytes,
    HANDSHAKE_LEN, HANDSHAKE_PREFIX_LEN,
};

fuzz_target!(|data: &[u8]| {
    let [config, s0, s1, input @ ..] = data else {
        return;
    };
    let split = usize::from(u16::from_le_bytes([*s0, *s1])) % (input.len() + 1);
    let (a, b) = input.split_at(split);
    let view = SplitBytes::new(a, b);

    let decoder = decoder(*config, input);
    let mut rest = handshake(view, input);
    messages(&decoder, &mut rest, input);
    extended(view);
});

/// Byte 0: bit 0 sets a small frame limit, bit 1 a piece count taken from the high bits.
fn decoder(config: u8, input: &[u8]) -> Decoder {
    let mut decoder = Decoder::new();
    if config & 1 != 0 {
        decoder = decoder.with_max_message_len(u32::from(config) * 4);
    }
    if config & 2 != 0 {
        let pieces = u32::from(config >> 2) + u32::try_from(input.len() % 64).unwrap_or(0);
        decoder = decoder.with_piece_count(Some(pieces));
    }
    decoder
}

/// Decodes a handshake at the start of the stream. Returns the view after it when one is
/// there, or the whole view otherwise, so that messages are tried either way.
fn handshake<'a>(view: SplitBytes<'a>, input: &[u8]) -> (SplitBytes<'a>, usize) {
    let prefix = Handshake::decode_prefix(view);
    match Handshake::decode(view) {
        Ok(Decoded::Complete { value, consumed }) => {
            assert_eq!(consumed, HANDSHAKE_LEN);
            assert_eq!(&value.to_bytes()[..], &input[..HANDSHAKE_LEN]);
            let (p, used) = prefix
                .expect("prefix decodes")
                .complete()
                .expect("complete");
            assert_eq!(used, HANDSHAKE_PREFIX_LEN);
            assert_eq!((p.reserved, p.info_hash), (value.reserved, value.info_hash));
            let rest = view.split_at(consumed).expect("in range").1;
            (rest, consumed)
        }
        Ok(Decoded::Incomplete { needed }) => {
            assert!(view.len() + needed.get() <= HANDSHAKE_LEN);
            (view, 0)
        }
        Err(e) => {
            assert_eq!(prefix, Err(e));
            (view, 0)
        }
    }
}

/// Decodes messages until the input runs out or one is malformed.
fn messages(decoder: &Decoder, (view, at): &mut (SplitBytes<'_>, usize), input: &[u8]) {
    let mut out = Vec::new();
    loop {
        let checked = decoder.check(*view);
        match decoder.decode(*view) {
            Ok(Decoded::Complete { value, consumed }) => {
                assert_eq!(
                    checked,
                    Ok(Decoded::Complete {
                        value: (),
                        consumed
                    })
                );
                out.clear();
                value.encode(&mut out);
                assert_eq!(out.len(), value.encoded_len());
                assert_eq!(&out[..], &input[*at..*at + consumed]);
                if let Message::Extended { id: 0, payload } = value {
                    extended(payload);
                }
                *view = view.split_at(consumed).expect("in range").1;
                *at += consumed;
            }
            Ok(Decoded::Incomplete { needed }) => {
                assert_eq!(checked, Ok(Decoded::Incomplete { needed }));
                return;
            }
            Err(_) => return,
        }
    }
}

/// An extended handshake that parses must survive encode and parse unchanged.
fn extended(payload: SplitBytes<'_>) {
    if let Ok(hs) = ExtendedHandshake::decode(payload) {
        let bytes = hs.to_bytes();
        assert_eq!(ExtendedHandshake::decode(&bytes), Ok(hs));
    }
    // The BEP 9 and BEP 11 payloads: what decodes re-encodes to something that decodes the
    // same.
    let bytes = payload.to_contiguous();
    if let Ok(Some(msg)) = MetadataMsg::decode(&bytes) {
        let mut out = Vec::new();
        msg.encode(&mut out);
        assert_eq!(MetadataMsg::decode(&out), Ok(Some(msg)));
    }
    if let Ok(pex) = PexMsg::decode(&bytes, 50) {
        let mut out = Vec::new();
        pex.encode(&mut out);
        assert_eq!(PexMsg::decode(&out, 50), Ok(pex));
    }
}
