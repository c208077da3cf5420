//! Property tests: every message survives encode then decode from a buffer split anywhere, and
//! decoding arbitrary bytes never panics (and re-encodes to the same bytes when it succeeds).

use std::collections::BTreeMap;

use ::core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use proptest::prelude::*;

use super::*;
use crate::core::types::{InfoHash, PeerId};
use crate::limits::MAX_MESSAGE_LEN;

/// The owned inputs of one arbitrary message; [`build`] borrows them into a [`Message`].
type Spec = (u8, u32, u32, u32, u16, u8, Vec<u8>);

fn spec() -> impl Strategy<Value = Spec> {
    (
        0u8..21,
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<u16>(),
        any::<u8>(),
        proptest::collection::vec(any::<u8>(), 0..40),
    )
}

fn build(spec: &Spec) -> Message<'_> {
    let (kind, a, b, c, port, ext, ref bytes) = *spec;
    let whole_hashes = &bytes[..];
    let hash_req = HashRequest {
        root: [ext; 32],
        base: a,
        index: b,
        length: c,
        proof_layers: u32::from(port),
    };
    let bytes = SplitBytes::single(bytes);
    let req = BlockRequest {
        piece: a,
        offset: b,
        len: c,
    };
    match kind {
        0 => Message::KeepAlive,
        1 => Message::Choke,
        2 => Message::Unchoke,
        3 => Message::Interested,
        4 => Message::NotInterested,
        5 => Message::Have { piece: a },
        6 => Message::Bitfield { bits: bytes },
        7 => Message::Request(req),
        8 => Message::Piece {
            piece: a,
            offset: b,
            data: bytes,
        },
        9 => Message::Cancel(req),
        10 => Message::Port { port },
        11 => Message::Suggest { piece: a },
        12 => Message::HaveAll,
        13 => Message::HaveNone,
        14 => Message::Reject(req),
        15 => Message::AllowedFast { piece: a },
        16 => Message::HashRequest(hash_req),
        17 => Message::HashReject(hash_req),
        18 => Message::Hashes {
            request: hash_req,
            hashes: SplitBytes::single(&whole_hashes[..whole_hashes.len() / 32 * 32]),
        },
        _ => Message::Extended {
            id: ext,
            payload: bytes,
        },
    }
}

/// Frames that are often well-formed: a known (or nearly known) id with a body of a plausible
/// length, so that random testing reaches the parsers and not only the framing checks.
fn plausible_frames() -> impl Strategy<Value = Vec<u8>> {
    let frame = (
        prop_oneof![
            3 => proptest::sample::select(MessageId::ALL.map(MessageId::as_u8).to_vec()),
            1 => any::<u8>(),
        ],
        proptest::collection::vec(any::<u8>(), 0..20),
        any::<bool>(),
    )
        .prop_map(|(id, body, keep_alive)| {
            if keep_alive {
                return vec![0, 0, 0, 0];
            }
            let mut frame = u32::try_from(body.len() + 1)
                .unwrap_or(u32::MAX)
                .to_be_bytes()
                .to_vec();
            frame.push(id);
            frame.extend_from_slice(&body);
            frame
        });
    proptest::collection::vec(frame, 0..6).prop_map(|frames| frames.concat())
}

fn decoder() -> impl Strategy<Value = Decoder> {
    (
        prop_oneof![Just(MAX_MESSAGE_LEN), 0u32..40, any::<u32>()],
        proptest::option::of(0u32..200),
    )
        .prop_map(|(max, pieces)| {
            Decoder::new()
                .with_max_message_len(max)
                .with_piece_count(pieces)
        })
}

/// Decodes frames one after another from `input` split at `split` until the input runs out
/// or an error; every decoded message must re-encode to exactly the bytes it was read from.
fn decode_all(decoder: &Decoder, input: &[u8], split: usize) {
    let split = split % (input.len() + 1);
    let (a, b) = input.split_at(split);
    let mut view = SplitBytes::new(a, b);
    let mut at = 0;
    loop {
        match decoder.decode(view) {
            Ok(Decoded::Complete { value, consumed }) => {
                assert!(consumed > 0 && consumed <= view.len());
                let mut out = Vec::new();
                value.encode(&mut out);
                assert_eq!(&out[..], &input[at..at + consumed]);
                if let Message::Extended { id: 0, payload } = value {
                    extended_round_trip(payload);
                }
                view = view.split_at(consumed).unwrap().1;
                at += consumed;
            }
            Ok(Decoded::Incomplete { needed }) => {
                assert!(decoder.check(view).unwrap() == Decoded::Incomplete { needed });
                break;
            }
            Err(_) => break,
        }
    }
}

/// An extended handshake that parses must encode to a payload that parses to the same value.
fn extended_round_trip(payload: SplitBytes<'_>) {
    if let Ok(hs) = ExtendedHandshake::decode(payload) {
        assert_eq!(ExtendedHandshake::decode(&hs.to_bytes()), Ok(hs));
    }
}

fn extended_handshake() -> impl Strategy<Value = ExtendedHandshake> {
    let ip = prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
    ];
    (
        proptest::collection::btree_map("[a-zA-Z_]{1,12}", any::<u8>(), 0..5),
        proptest::option::of(any::<u16>()),
        proptest::option::of(".{0,16}"),
        proptest::option::of(ip),
        proptest::option::of(any::<[u8; 4]>().prop_map(Ipv4Addr::from)),
        proptest::option::of(any::<[u8; 16]>().prop_map(Ipv6Addr::from)),
        proptest::option::of(any::<u32>()),
        proptest::option::of(0..=i64::MAX as u64),
        proptest::option::of(any::<bool>()),
    )
        .prop_map(
            |(
                extensions,
                listen_port,
                client,
                your_ip,
                ipv4,
                ipv6,
                request_queue,
                metadata_size,
                upload_only,
            ): (BTreeMap<String, u8>, _, _, _, _, _, _, _, _)| ExtendedHandshake {
                extensions,
                listen_port,
                client,
                your_ip,
                ipv4,
                ipv6,
                request_queue,
                metadata_size,
                upload_only,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn messages_round_trip_at_every_split(spec in spec(), trailing in proptest::collection::vec(any::<u8>(), 0..4)) {
        let message = build(&spec);
        let mut bytes = Vec::new();
        message.encode(&mut bytes);
        prop_assert_eq!(bytes.len(), message.encoded_len());
        let len = bytes.len();
        bytes.extend_from_slice(&trailing);
        let decoder = Decoder::new();
        for split in 0..=bytes.len() {
            let (a, b) = bytes.split_at(split);
            let got = decoder.decode((a, b)).unwrap();
            prop_assert_eq!(got, Decoded::Complete { value: message, consumed: len });
        }
        for have in 0..len {
            let got = decoder.decode(&bytes[..have]).unwrap();
            prop_assert!(!got.is_complete(), "complete with {} of {} bytes", have, len);
            if let Decoded::Incomplete { needed } = got {
                prop_assert!(have + needed.get() <= len);
            }
        }
    }

    #[test]
    fn message_streams_round_trip_through_a_ring(specs in proptest::collection::vec(spec(), 0..8), split in any::<usize>()) {
        let messages: Vec<Message<'_>> = specs.iter().map(build).collect();
        let mut bytes = Vec::new();
        for m in &messages {
            m.encode(&mut bytes);
        }
        let split = split % (bytes.len() + 1);
        let (a, b) = bytes.split_at(split);
        let mut view = SplitBytes::new(a, b);
        for expected in &messages {
            let (got, used) = Decoder::new().decode(view).unwrap().complete().unwrap();
            prop_assert_eq!(&got, expected);
            view = view.split_at(used).unwrap().1;
        }
        prop_assert!(view.is_empty());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), split in any::<usize>(), decoder in decoder()) {
        decode_all(&decoder, &bytes, split);
        let (a, b) = bytes.split_at(split % (bytes.len() + 1));
        let _ = Handshake::decode((a, b));
        let _ = Handshake::decode_prefix((a, b));
        extended_round_trip(SplitBytes::new(a, b));
    }

    #[test]
    fn plausible_frames_never_panic(bytes in plausible_frames(), split in any::<usize>(), decoder in decoder()) {
        decode_all(&decoder, &bytes, split);
    }

    #[test]
    fn bitfield_checks_agree(bits in proptest::collection::vec(any::<u8>(), 0..6), pieces in 0u32..48) {
        let message = Message::Bitfield { bits: SplitBytes::single(&bits) };
        let mut bytes = Vec::new();
        message.encode(&mut bytes);
        let decoded = Decoder::new().with_piece_count(Some(pieces)).decode(&bytes);
        match validate_bitfield(&bits, pieces) {
            Ok(()) => prop_assert_eq!(decoded, Ok(Decoded::Complete { value: message, consumed: bytes.len() })),
            Err(e) => prop_assert_eq!(decoded, Err(MessageError::Bitfield(e))),
        }
    }

    #[test]
    fn handshakes_round_trip_at_every_split(reserved in any::<[u8; 8]>(), info_hash in any::<[u8; 20]>(), peer_id in any::<[u8; 20]>()) {
        let hs = Handshake::new(Reserved::from_bytes(reserved), InfoHash::from_bytes(info_hash), PeerId::from_bytes(peer_id));
        let bytes = hs.to_bytes();
        for split in 0..=bytes.len() {
            let (a, b) = bytes.split_at(split);
            prop_assert_eq!(Handshake::decode((a, b)), Ok(Decoded::Complete { value: hs, consumed: HANDSHAKE_LEN }));
        }
    }

    #[test]
    fn extended_handshakes_round_trip(hs in extended_handshake(), split in any::<usize>()) {
        let bytes = hs.to_bytes();
        let (a, b) = bytes.split_at(split % (bytes.len() + 1));
        prop_assert_eq!(ExtendedHandshake::decode((a, b)), Ok(hs));
    }

    #[test]
    fn ut_payloads_never_panic_and_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(Some(msg)) = MetadataMsg::decode(&bytes) {
            let mut out = Vec::new();
            msg.encode(&mut out);
            prop_assert_eq!(MetadataMsg::decode(&out), Ok(Some(msg)));
        }
        if let Ok(pex) = PexMsg::decode(&bytes, 50) {
            let mut out = Vec::new();
            pex.encode(&mut out);
            prop_assert_eq!(PexMsg::decode(&out, 50), Ok(pex));
        }
    }

    #[test]
    fn metadata_data_round_trips(piece in any::<u32>(), total in 0u64..1 << 40, data in proptest::collection::vec(any::<u8>(), 0..64)) {
        let msg = MetadataMsg::Data { piece, total_size: total, data: &data };
        let mut out = Vec::new();
        msg.encode(&mut out);
        prop_assert_eq!(MetadataMsg::decode(&out), Ok(Some(msg)));
    }
}
