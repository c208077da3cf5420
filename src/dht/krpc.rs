//! KRPC (BEP 5): the bencoded query/response/error messages, with BEP 32's `nodes6` and
//! `want`, BEP 42's `ip`, and BEP 43's `ro`.
//!
//! Decoding checks before it parses: the datagram goes through the bencode decoder under
//! tight [`Limits`] (size, depth, value count), then every field is checked for type and
//! length before use. Nothing here indexes or unwraps untrusted bytes. Unknown keys are
//! ignored, as BEP 5 asks.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::bencode::{decode_with, write_bytes, write_int, Limits, Node};
use crate::core::InfoHash;

use super::NodeId;

/// The largest datagram decoded (a KRPC message with 100 peers and 16 nodes of each family is
/// under 2 KiB; nothing legitimate comes near this).
pub const MAX_DATAGRAM: usize = 4096;
/// Longest transaction id accepted (ours are 4 bytes; others' are echoed back).
pub const MAX_TID: usize = 16;
/// Longest token accepted.
pub const MAX_TOKEN: usize = 64;
/// Most `values` entries read from one response.
pub const MAX_VALUES: usize = 200;
/// Most nodes read from one `nodes`/`nodes6` field.
pub const MAX_NODES: usize = 32;

/// The decoder's bounds for one datagram.
const LIMITS: Limits = Limits {
    max_depth: 4,
    max_values: 512,
    max_len: MAX_DATAGRAM,
};

/// KRPC error codes.
pub mod code {
    /// Generic error.
    pub const GENERIC: i64 = 201;
    /// Server error.
    pub const SERVER: i64 = 202;
    /// Protocol error: malformed packet, invalid arguments, bad token.
    pub const PROTOCOL: i64 = 203;
    /// Method unknown.
    pub const METHOD_UNKNOWN: i64 = 204;
}

/// Which families' nodes the asker wants (BEP 32).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Want {
    /// `n4`.
    pub n4: bool,
    /// `n6`.
    pub n6: bool,
}

/// A query's method and arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Query {
    /// `ping`.
    Ping,
    /// `find_node`.
    FindNode {
        /// The id sought.
        target: NodeId,
        /// BEP 32 `want`; `None` when absent.
        want: Option<Want>,
    },
    /// `get_peers`.
    GetPeers {
        /// The torrent.
        info_hash: InfoHash,
        /// BEP 32 `want`; `None` when absent.
        want: Option<Want>,
    },
    /// `announce_peer`.
    AnnouncePeer {
        /// The torrent.
        info_hash: InfoHash,
        /// The port given.
        port: u16,
        /// Use the source port instead of `port`.
        implied_port: bool,
        /// The token from our `get_peers` answer.
        token: Vec<u8>,
    },
    /// A method we do not know (answered with error 204).
    Unknown,
}

/// A response's fields (the union of what each method returns).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    /// `nodes` (compact IPv4 node info).
    pub nodes: Vec<(NodeId, SocketAddr)>,
    /// `nodes6` (compact IPv6 node info).
    pub nodes6: Vec<(NodeId, SocketAddr)>,
    /// `values` (compact peers, 6 or 18 bytes each).
    pub values: Vec<SocketAddr>,
    /// `token`.
    pub token: Option<Vec<u8>>,
}

/// What a message is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// `y = q`.
    Query {
        /// The querier's id.
        id: NodeId,
        /// The method and its arguments.
        query: Query,
        /// BEP 43 read-only node: not to be added to routing tables.
        read_only: bool,
    },
    /// `y = r`.
    Response {
        /// The responder's id.
        id: NodeId,
        /// Its fields.
        response: Response,
        /// BEP 42 `ip`: our address as the responder saw it.
        ip: Option<SocketAddr>,
    },
    /// `y = e`.
    Error {
        /// The code (201-204 in BEP 5).
        code: i64,
    },
}

/// A decoded KRPC message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The transaction id.
    pub tid: Vec<u8>,
    /// The rest.
    pub body: Body,
}

/// Why a datagram was not a usable message. When it was a query whose transaction id could be
/// read, `reply_tid` says so and the caller answers with error 203.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Malformed {
    /// The transaction id of a malformed *query*, to answer it with a protocol error.
    pub reply_tid: Option<Vec<u8>>,
    /// What was wrong, for tests and logs.
    pub reason: &'static str,
}

fn bad(reason: &'static str) -> Malformed {
    Malformed {
        reply_tid: None,
        reason,
    }
}

/// Decodes one datagram.
pub fn decode(data: &[u8]) -> Result<Message, Malformed> {
    let root = decode_with(data, &LIMITS).map_err(|_| bad("not bencode"))?;
    if root.as_dict().is_none() {
        return Err(bad("not a dictionary"));
    }
    let tid = root
        .get(b"t")
        .and_then(Node::as_bytes)
        .ok_or(bad("no transaction id"))?;
    if tid.len() > MAX_TID {
        return Err(bad("transaction id too long"));
    }
    let kind = root
        .get(b"y")
        .and_then(Node::as_bytes)
        .ok_or(bad("no message type"))?;
    let body = match kind {
        b"q" => decode_query(&root).map_err(|reason| Malformed {
            reply_tid: Some(tid.to_vec()),
            reason,
        })?,
        b"r" => decode_response(&root)?,
        b"e" => decode_error(&root)?,
        _ => return Err(bad("unknown message type")),
    };
    Ok(Message {
        tid: tid.to_vec(),
        body,
    })
}

fn node_id(node: Option<&Node<'_>>) -> Option<NodeId> {
    let bytes: [u8; 20] = node?.as_bytes()?.try_into().ok()?;
    Some(NodeId(bytes))
}

fn decode_want(args: &Node<'_>) -> Result<Option<Want>, &'static str> {
    let Some(want) = args.get(b"want") else {
        return Ok(None);
    };
    let items = want.as_list().ok_or("want is not a list")?;
    let mut out = Want::default();
    for item in items {
        match item.as_bytes() {
            Some(b"n4") => out.n4 = true,
            Some(b"n6") => out.n6 = true,
            Some(_) => {}
            None => return Err("want item is not a string"),
        }
    }
    Ok(Some(out))
}

fn decode_query(root: &Node<'_>) -> Result<Body, &'static str> {
    let method = root.get(b"q").and_then(Node::as_bytes).ok_or("no method")?;
    let args = root.get(b"a").ok_or("no arguments")?;
    if args.as_dict().is_none() {
        return Err("arguments are not a dictionary");
    }
    let id = node_id(args.get(b"id")).ok_or("bad id")?;
    let read_only = matches!(root.get(b"ro").and_then(Node::as_int), Some(1));
    let query = match method {
        b"ping" => Query::Ping,
        b"find_node" => Query::FindNode {
            target: node_id(args.get(b"target")).ok_or("bad target")?,
            want: decode_want(args)?,
        },
        b"get_peers" => Query::GetPeers {
            info_hash: info_hash(args)?,
            want: decode_want(args)?,
        },
        b"announce_peer" => {
            let implied_port = matches!(args.get(b"implied_port").and_then(Node::as_int), Some(1));
            let port = match args.get(b"port").and_then(Node::as_int) {
                Some(p) => u16::try_from(p).map_err(|_| "bad port")?,
                None if implied_port => 0,
                None => return Err("no port"),
            };
            if port == 0 && !implied_port {
                return Err("port 0");
            }
            let token = args
                .get(b"token")
                .and_then(Node::as_bytes)
                .ok_or("no token")?;
            if token.len() > MAX_TOKEN {
                return Err("token too long");
            }
            Query::AnnouncePeer {
                info_hash: info_hash(args)?,
                port,
                implied_port,
                token: token.to_vec(),
            }
        }
        _ => Query::Unknown,
    };
    Ok(Body::Query {
        id,
        query,
        read_only,
    })
}

fn info_hash(args: &Node<'_>) -> Result<InfoHash, &'static str> {
    args.get(b"info_hash")
        .and_then(Node::as_bytes)
        .and_then(InfoHash::from_slice)
        .ok_or("bad info_hash")
}

fn decode_response(root: &Node<'_>) -> Result<Body, Malformed> {
    let r = root.get(b"r").ok_or(bad("no response"))?;
    if r.as_dict().is_none() {
        return Err(bad("response is not a dictionary"));
    }
    let id = node_id(r.get(b"id")).ok_or(bad("bad id"))?;
    let mut response = Response::default();
    if let Some(nodes) = r.get(b"nodes") {
        let bytes = nodes.as_bytes().ok_or(bad("nodes is not a string"))?;
        response.nodes = compact_nodes(bytes, 26).ok_or(bad("bad nodes"))?;
    }
    if let Some(nodes) = r.get(b"nodes6") {
        let bytes = nodes.as_bytes().ok_or(bad("nodes6 is not a string"))?;
        response.nodes6 = compact_nodes(bytes, 38).ok_or(bad("bad nodes6"))?;
    }
    if let Some(values) = r.get(b"values") {
        let items = values.as_list().ok_or(bad("values is not a list"))?;
        for item in items.iter().take(MAX_VALUES) {
            // A value of the wrong size is skipped, not fatal: some nodes pad.
            if let Some(addr) = item.as_bytes().and_then(compact_addr) {
                response.values.push(addr);
            }
        }
    }
    if let Some(token) = r.get(b"token") {
        let token = token.as_bytes().ok_or(bad("token is not a string"))?;
        if token.len() > MAX_TOKEN {
            return Err(bad("token too long"));
        }
        response.token = Some(token.to_vec());
    }
    let ip = root
        .get(b"ip")
        .and_then(Node::as_bytes)
        .and_then(compact_addr);
    Ok(Body::Response { id, response, ip })
}

fn decode_error(root: &Node<'_>) -> Result<Body, Malformed> {
    let e = root
        .get(b"e")
        .and_then(Node::as_list)
        .ok_or(bad("no error list"))?;
    let code = e
        .first()
        .and_then(Node::as_int)
        .ok_or(bad("no error code"))?;
    Ok(Body::Error { code })
}

/// Compact node info: 20-byte id then a 6- or 18-byte address, `width` (26 or 38) each.
fn compact_nodes(bytes: &[u8], width: usize) -> Option<Vec<(NodeId, SocketAddr)>> {
    if bytes.len() % width != 0 {
        return None;
    }
    let mut out = Vec::new();
    for chunk in bytes.chunks_exact(width).take(MAX_NODES) {
        let (id, addr) = chunk.split_at(20);
        let id = NodeId(id.try_into().ok()?);
        out.push((id, compact_addr(addr)?));
    }
    Some(out)
}

/// A compact address: 4-byte IPv4 or 16-byte IPv6, then a big-endian port.
pub fn compact_addr(bytes: &[u8]) -> Option<SocketAddr> {
    match bytes.len() {
        6 => {
            let ip: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
            let port = u16::from_be_bytes(bytes.get(4..6)?.try_into().ok()?);
            Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
        }
        18 => {
            let ip: [u8; 16] = bytes.get(..16)?.try_into().ok()?;
            let port = u16::from_be_bytes(bytes.get(16..18)?.try_into().ok()?);
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port,
                0,
                0,
            )))
        }
        _ => None,
    }
}

/// Appends the compact form of `addr` (6 or 18 bytes).
pub fn push_compact_addr(out: &mut Vec<u8>, addr: &SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// Compact node info for a list of nodes (all of one family).
pub fn compact_nodes_bytes(nodes: &[(NodeId, SocketAddr)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nodes.len() * 38);
    for (id, addr) in nodes {
        out.extend_from_slice(&id.0);
        push_compact_addr(&mut out, addr);
    }
    out
}

fn key(out: &mut Vec<u8>, k: &str) {
    write_bytes(out, k.as_bytes());
}

/// Encodes a query. Keys are written in sorted order, as bencode requires.
pub fn encode_query(tid: &[u8], id: &NodeId, query: &Query, read_only: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.push(b'd');
    key(&mut out, "a");
    out.push(b'd');
    let method = match query {
        Query::Ping => {
            key(&mut out, "id");
            write_bytes(&mut out, &id.0);
            "ping"
        }
        Query::FindNode { target, want } => {
            key(&mut out, "id");
            write_bytes(&mut out, &id.0);
            key(&mut out, "target");
            write_bytes(&mut out, &target.0);
            push_want(&mut out, want);
            "find_node"
        }
        Query::GetPeers { info_hash, want } => {
            key(&mut out, "id");
            write_bytes(&mut out, &id.0);
            key(&mut out, "info_hash");
            write_bytes(&mut out, info_hash.as_bytes());
            push_want(&mut out, want);
            "get_peers"
        }
        Query::AnnouncePeer {
            info_hash,
            port,
            implied_port,
            token,
        } => {
            key(&mut out, "id");
            write_bytes(&mut out, &id.0);
            if *implied_port {
                key(&mut out, "implied_port");
                write_int(&mut out, 1);
            }
            key(&mut out, "info_hash");
            write_bytes(&mut out, info_hash.as_bytes());
            key(&mut out, "port");
            write_int(&mut out, i64::from(*port));
            key(&mut out, "token");
            write_bytes(&mut out, token);
            "announce_peer"
        }
        Query::Unknown => {
            key(&mut out, "id");
            write_bytes(&mut out, &id.0);
            "unknown_method"
        }
    };
    out.push(b'e');
    key(&mut out, "q");
    key(&mut out, method);
    if read_only {
        key(&mut out, "ro");
        write_int(&mut out, 1);
    }
    key(&mut out, "t");
    write_bytes(&mut out, tid);
    key(&mut out, "y");
    key(&mut out, "q");
    out.push(b'e');
    out
}

fn push_want(out: &mut Vec<u8>, want: &Option<Want>) {
    if let Some(want) = want {
        key(out, "want");
        out.push(b'l');
        if want.n4 {
            key(out, "n4");
        }
        if want.n6 {
            key(out, "n6");
        }
        out.push(b'e');
    }
}

/// Encodes a response; `ip` is the asker's address as we saw it (BEP 42).
pub fn encode_response(tid: &[u8], id: &NodeId, r: &Response, ip: Option<&SocketAddr>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.push(b'd');
    if let Some(ip) = ip {
        key(&mut out, "ip");
        let mut compact = Vec::with_capacity(18);
        push_compact_addr(&mut compact, ip);
        write_bytes(&mut out, &compact);
    }
    key(&mut out, "r");
    out.push(b'd');
    key(&mut out, "id");
    write_bytes(&mut out, &id.0);
    if !r.nodes.is_empty() {
        key(&mut out, "nodes");
        write_bytes(&mut out, &compact_nodes_bytes(&r.nodes));
    }
    if !r.nodes6.is_empty() {
        key(&mut out, "nodes6");
        write_bytes(&mut out, &compact_nodes_bytes(&r.nodes6));
    }
    if let Some(token) = &r.token {
        key(&mut out, "token");
        write_bytes(&mut out, token);
    }
    if !r.values.is_empty() {
        key(&mut out, "values");
        out.push(b'l');
        let mut compact = Vec::with_capacity(18);
        for v in &r.values {
            compact.clear();
            push_compact_addr(&mut compact, v);
            write_bytes(&mut out, &compact);
        }
        out.push(b'e');
    }
    out.push(b'e');
    key(&mut out, "t");
    write_bytes(&mut out, tid);
    key(&mut out, "y");
    key(&mut out, "r");
    out.push(b'e');
    out
}

/// Encodes an error.
pub fn encode_error(tid: &[u8], code: i64, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(b'd');
    key(&mut out, "e");
    out.push(b'l');
    write_int(&mut out, code);
    write_bytes(&mut out, message.as_bytes());
    out.push(b'e');
    key(&mut out, "t");
    write_bytes(&mut out, tid);
    key(&mut out, "y");
    key(&mut out, "e");
    out.push(b'e');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: u8) -> NodeId {
        NodeId([b; 20])
    }

    fn v4(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn bep5_examples_decode() {
        let ping = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe";
        let m = decode(ping).unwrap();
        assert_eq!(m.tid, b"aa");
        assert_eq!(
            m.body,
            Body::Query {
                id: NodeId(*b"abcdefghij0123456789"),
                query: Query::Ping,
                read_only: false
            }
        );
        let pong = b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re";
        assert!(matches!(decode(pong).unwrap().body, Body::Response { .. }));
        let err = b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee";
        assert_eq!(decode(err).unwrap().body, Body::Error { code: 201 });
        let announce = b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:mnopqrstuvwxyz1234564:porti6881e5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe";
        match decode(announce).unwrap().body {
            Body::Query {
                query:
                    Query::AnnouncePeer {
                        port,
                        implied_port,
                        token,
                        ..
                    },
                ..
            } => {
                assert_eq!(port, 6881);
                assert!(implied_port);
                assert_eq!(token, b"aoeusnth");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn queries_round_trip() {
        let ih = InfoHash::from_bytes([9; 20]);
        let queries = [
            Query::Ping,
            Query::FindNode {
                target: id(3),
                want: Some(Want { n4: true, n6: true }),
            },
            Query::FindNode {
                target: id(3),
                want: None,
            },
            Query::GetPeers {
                info_hash: ih,
                want: Some(Want {
                    n4: false,
                    n6: true,
                }),
            },
            Query::AnnouncePeer {
                info_hash: ih,
                port: 51413,
                implied_port: false,
                token: b"tok".to_vec(),
            },
            Query::AnnouncePeer {
                info_hash: ih,
                port: 0,
                implied_port: true,
                token: b"tok".to_vec(),
            },
        ];
        for q in queries {
            for ro in [false, true] {
                let bytes = encode_query(b"tx01", &id(1), &q, ro);
                // Our encoding is canonical bencode.
                let canon = crate::bencode::decode(&bytes)
                    .unwrap()
                    .to_owned_value()
                    .to_bytes();
                assert_eq!(canon, bytes);
                let m = decode(&bytes).unwrap();
                assert_eq!(m.tid, b"tx01");
                assert_eq!(
                    m.body,
                    Body::Query {
                        id: id(1),
                        query: q.clone(),
                        read_only: ro
                    }
                );
            }
        }
    }

    #[test]
    fn responses_round_trip() {
        let r = Response {
            nodes: vec![(id(4), v4("1.2.3.4:5")), (id(5), v4("9.8.7.6:65535"))],
            nodes6: vec![(id(6), "[2001:db8::1]:6881".parse().unwrap())],
            values: vec![v4("5.6.7.8:1"), "[::1]:80".parse().unwrap()],
            token: Some(b"secret".to_vec()),
        };
        let ip = v4("7.7.7.7:7");
        let bytes = encode_response(b"zz", &id(2), &r, Some(&ip));
        let canon = crate::bencode::decode(&bytes)
            .unwrap()
            .to_owned_value()
            .to_bytes();
        assert_eq!(canon, bytes);
        let m = decode(&bytes).unwrap();
        assert_eq!(
            m.body,
            Body::Response {
                id: id(2),
                response: r,
                ip: Some(ip)
            }
        );
        let e = encode_error(b"zz", code::METHOD_UNKNOWN, "Method Unknown");
        assert_eq!(decode(&e).unwrap().body, Body::Error { code: 204 });
    }

    #[test]
    fn malformed_input_is_rejected() {
        let cases: [&[u8]; 14] = [
            b"",
            b"d",
            b"de",
            b"le",
            b"d1:t2:aae",
            b"d1:t2:aa1:y1:xe",
            b"d1:t2:aa1:y1:re",
            b"d1:rd2:id3:abce1:t2:aa1:y1:re",
            b"d1:rd2:id20:abcdefghij01234567895:nodes3:abce1:t2:aa1:y1:re",
            b"d1:rd2:id20:abcdefghij01234567896:nodes63:abce1:t2:aa1:y1:re",
            b"d1:t17:aaaaaaaaaaaaaaaaa1:y1:re",
            b"d1:eli201ee1:t2:aa1:y1:ee1",
            b"d1:ele1:t2:aa1:y1:ee",
            b"i5e",
        ];
        for c in cases {
            assert!(decode(c).is_err(), "{:?}", String::from_utf8_lossy(c));
        }
        // A query with a transaction id but bad arguments gets a 203 reply.
        let bad_query = b"d1:ad2:id3:abce1:q4:ping1:t2:aa1:y1:qe";
        assert_eq!(
            decode(bad_query).unwrap_err().reply_tid,
            Some(b"aa".to_vec())
        );
        let no_token = b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:porti1ee1:q13:announce_peer1:t2:aa1:y1:qe";
        assert!(decode(no_token).unwrap_err().reply_tid.is_some());
        let big_port = b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:porti70000e5:token1:xe1:q13:announce_peer1:t2:aa1:y1:qe";
        assert!(decode(big_port).is_err());
        // Too big and too deep.
        let mut big = b"d1:t2:aa1:y1:r1:x".to_vec();
        big.extend_from_slice(format!("{}:", MAX_DATAGRAM).as_bytes());
        big.extend(std::iter::repeat_n(b'a', MAX_DATAGRAM));
        big.push(b'e');
        assert!(decode(&big).is_err());
        assert!(decode(b"d1:xlllllleeeeee1:t2:aa1:y1:qe").is_err());
        // Unknown methods decode (to answer 204).
        let unknown = b"d1:ad2:id20:abcdefghij0123456789e1:q3:foo1:t2:aa1:y1:qe";
        assert!(matches!(
            decode(unknown).unwrap().body,
            Body::Query {
                query: Query::Unknown,
                ..
            }
        ));
    }

    #[test]
    fn values_of_odd_sizes_are_skipped_and_capped() {
        let response_with = |n: usize| {
            let mut v = b"d1:rd2:id20:abcdefghij01234567896:valuesl".to_vec();
            for _ in 0..n {
                v.extend_from_slice(b"6:\x01\x02\x03\x04\x00\x50");
            }
            v.extend_from_slice(b"ee1:t2:aa1:y1:re");
            v
        };
        // Over the decoder's value count: rejected whole.
        assert!(decode(&response_with(600)).is_err());
        // Under it, but more values than we read: capped.
        match decode(&response_with(MAX_VALUES + 50)).unwrap().body {
            Body::Response { response, .. } => assert_eq!(response.values.len(), MAX_VALUES),
            other => panic!("{other:?}"),
        }
        let mut v =
            b"d1:rd2:id20:abcdefghij01234567896:valuesl3:abc6:\x01\x02\x03\x04\x00\x50".to_vec();
        v.extend_from_slice(b"ee1:t2:aa1:y1:re");
        match decode(&v).unwrap().body {
            Body::Response { response, .. } => {
                assert_eq!(response.values, vec![v4("1.2.3.4:80")])
            }
            other => panic!("{other:?}"),
        }
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len() / 2)
            .map(|i| u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).unwrap())
            .collect()
    }

    /// Captured from libtorrent 2.0.8 on loopback: its bootstrap `get_peers` (with `bs` and
    /// `v`) and its answer to ours (with `ip`, `p`, an empty `nodes` and a 4-byte token).
    #[test]
    fn libtorrent_messages_decode() {
        let query = unhex("64313a6164323a6273693165323a696432303aa7704f57a24e0af0b7a2544ef135aafcabfe70f0393a696e666f5f6861736832303aa7704f57a24e0af0b7a2544e3f199ef6370df99865313a71393a6765745f7065657273313a74323a56f2313a76343a4c540208313a79313a7165");
        match decode(&query).unwrap().body {
            Body::Query {
                query: Query::GetPeers { want: None, .. },
                read_only: false,
                ..
            } => {}
            other => panic!("{other:?}"),
        }
        let answer = unhex("64323a6970363a7f000001c04a313a7264323a696432303aa7704f57a24e0af0b7a2544ef135aafcabfe70f0353a6e6f646573303a313a7069343932323665353a746f6b656e343aaf9a24eb65313a74343a61626364313a76343a4c540208313a79313a7265");
        let m = decode(&answer).unwrap();
        assert_eq!(m.tid, b"abcd");
        match m.body {
            Body::Response { response, ip, .. } => {
                assert_eq!(ip, Some("127.0.0.1:49226".parse().unwrap()));
                assert!(response.nodes.is_empty());
                assert_eq!(response.token.map(|t| t.len()), Some(4));
            }
            other => panic!("{other:?}"),
        }
    }
}
