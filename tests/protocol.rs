//! docs/PROTOCOL.md §5 (joining, binding, relaying) and §6 (disconnects), through real sockets
//! against the in-process server. Each test starts its own server, so they run in parallel.

mod common;

use std::time::Duration;

use common::*;

/// How long a peer must stay quiet to show that something was not delivered.
const QUIET: Duration = Duration::from_millis(300);

/// Has `joiner` send a probe and returns the signaling id under which its member sees it.
fn signaling_id(joiner: &mut Peer, member: &mut Peer) -> u32 {
    joiner.content(0, b"probe", false);
    let (s, r, data) = member.recv_content();
    assert_eq!(r, 0, "joiner -> member content must have recipientId 0");
    assert_eq!(data, b"probe");
    assert_ne!(s, 0, "a signaling id is never 0");
    s
}

/// Opens a member founding `path` (member id 1) and a joiner bound to it (id 2); returns
/// them with the joiner's signaling id.
fn bound_pair(server: &TestServer, path: &str) -> (Peer, Peer, u32) {
    let (mut member, mut joiner) = member_and_joiner(server, path);
    let s = signaling_id(&mut joiner, &mut member);
    (member, joiner, s)
}

/// One field of a raw protobuf message.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Field {
    Varint(u64),
    Bytes(Vec<u8>),
}

fn read_varint(b: &[u8], i: &mut usize) -> u64 {
    let mut value = 0;
    let mut shift = 0;
    loop {
        let byte = b[*i];
        *i += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return value;
        }
        shift += 7;
    }
}

/// The fields present on the wire, sorted by field number (only the wire types sigver uses).
fn fields(b: &[u8]) -> Vec<(u64, Field)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let tag = read_varint(b, &mut i);
        let field = match tag & 7 {
            0 => Field::Varint(read_varint(b, &mut i)),
            2 => {
                let len = read_varint(b, &mut i) as usize;
                i += len;
                Field::Bytes(b[i - len..i].to_vec())
            }
            t => panic!("unexpected wire type {t} in {b:02x?}"),
        };
        out.push((tag >> 3, field));
    }
    out.sort();
    out
}

/// The fields of the `content` in a raw `Message`, which must hold nothing else.
fn content_fields(raw: &[u8]) -> Vec<(u64, Field)> {
    match fields(raw).as_slice() {
        [(2, Field::Bytes(inner))] => fields(inner),
        other => panic!("expected a lone content, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// §5 rule 1 and 2a: founding a group

#[test]
fn first_peer_founds_group_with_empty_members() {
    // Proves rule 1: the first connect on a key answers true and makes the peer a member.
    let server = TestServer::start();
    let mut a = server.peer("/room");
    assert!(a.join(1, &[]));
    let mut b = server.peer("/room");
    assert!(b.join(2, &[1]), "a is a member with id 1");
}

#[test]
fn first_peer_founds_group_with_nonempty_members() {
    // Proves rule 1 ignores `members`: a first peer listing unknown ids still founds the group.
    let server = TestServer::start();
    let mut a = server.peer("/room");
    assert!(a.join(1, &[5, 6, 7]));
    let mut b = server.peer("/room");
    assert!(
        !b.join(2, &[]),
        "the group exists, so b is bound, not a founder"
    );
    let mut c = server.peer("/room");
    assert!(c.join(3, &[1]), "a is a member with id 1");
}

#[test]
fn five_connects_from_one_peer_give_five_true_answers() {
    // Proves rule 2a: a lone member re-sending connect gets exactly one true per request.
    let server = TestServer::start();
    let mut a = server.peer("/room");
    for _ in 0..5 {
        assert!(a.join(1, &[]));
    }
    a.expect_silence(QUIET);
}

#[test]
fn lone_member_reconnect_takes_new_id() {
    // Proves rule 2a updates the lone member's id (the original forgets to).
    let server = TestServer::start();
    let mut a = server.peer("/room");
    assert!(a.join(1, &[]));
    assert!(a.join(9, &[]));
    let mut b = server.peer("/room");
    assert!(!b.join(2, &[1]), "id 1 is no longer a member's id");
    let mut c = server.peer("/room");
    assert!(c.join(3, &[9]), "the lone member now has id 9");
}

// ---------------------------------------------------------------------------------------------
// §5 rules 2b, 3, 4: joining an existing group

#[test]
fn second_peer_without_common_members_gets_false() {
    // Proves rule 4: a connect sharing no member id with the group is answered false.
    let server = TestServer::start();
    let (_a, _b) = member_and_joiner(&server, "/room");
    let mut c = server.peer("/room");
    assert!(!c.join(3, &[7, 8]), "ids that are not members do not count");
}

#[test]
fn peer_listing_a_member_id_gets_true() {
    // Proves rules 2b and 3: listing a member's id makes the peer a member, found by others.
    let server = TestServer::start();
    let mut a = server.peer("/room");
    assert!(a.join(1, &[]));
    let mut b = server.peer("/room");
    assert!(b.join(2, &[1]), "2b: knows the lone member");
    let mut c = server.peer("/room");
    assert!(c.join(3, &[42, 2]), "3: b is now a member with id 2");
    let mut d = server.peer("/room");
    assert!(!d.join(4, &[42]), "3: nothing in common");
}

#[test]
fn member_reconnect_with_common_member_takes_new_id() {
    // Proves rule 3: a member re-sending connect with a common member keeps membership, new id.
    let server = TestServer::start();
    let mut a = server.peer("/room");
    assert!(a.join(1, &[]));
    let mut b = server.peer("/room");
    assert!(b.join(2, &[1]));
    assert!(a.join(7, &[2]));
    let mut c = server.peer("/room");
    assert!(!c.join(3, &[1]), "id 1 is gone from the group");
    let mut d = server.peer("/room");
    assert!(d.join(4, &[7]), "a is a member with id 7");
}

#[test]
fn member_without_common_members_stops_being_one() {
    // Proves rule 4: a member whose connect shares nothing leaves the group and is bound.
    let server = TestServer::start();
    let mut a = server.peer("/room");
    assert!(a.join(1, &[]));
    let mut b = server.peer("/room");
    assert!(b.join(2, &[1]));
    assert!(!b.join(2, &[]), "b is bound, not a member any more");
    let s = signaling_id(&mut b, &mut a);
    a.content(s, b"to b", false);
    assert_eq!(b.recv_content(), (0, s, b"to b".to_vec()));
    let mut c = server.peer("/room");
    assert!(!c.join(3, &[2]), "id 2 is no longer a member's id");
}

#[test]
fn blocking_lone_member_is_replaced() {
    // Proves rule 2c: a joiner that already tried the lone member replaces it; it gets 4744.
    let server = TestServer::start();
    let (mut a, mut b) = member_and_joiner(&server, "/room");
    assert!(b.join(2, &[]), "a was tried: b replaces it");
    assert_eq!(a.expect_close().code, 4744);
    let mut c = server.peer("/room");
    assert!(c.join(3, &[2]), "b is the lone member");
    let mut d = server.peer("/room");
    assert!(!d.join(4, &[1]), "a left the group");
}

// ---------------------------------------------------------------------------------------------
// §5 binding and relaying

#[test]
fn relay_rewrites_ids_both_ways() {
    // Proves both directions rewrite the ids, ignore the joiner's recipientId and keep order.
    let server = TestServer::start();
    let (mut m, mut j) = member_and_joiner(&server, "/room");
    for (recipient, data) in [
        (0, &b"offer"[..]),
        (777, b"candidate 1"),
        (1, b"candidate 2"),
    ] {
        j.content(recipient, data, false);
    }
    let (s, r, data) = m.recv_content();
    assert_ne!(s, 0);
    assert_eq!((r, data), (0, b"offer".to_vec()));
    assert_eq!(m.recv_content(), (s, 0, b"candidate 1".to_vec()));
    assert_eq!(m.recv_content(), (s, 0, b"candidate 2".to_vec()));
    for data in [&b"answer"[..], b"candidate 3", b"candidate 4"] {
        m.content(s, data, false);
    }
    for data in [&b"answer"[..], b"candidate 3", b"candidate 4"] {
        assert_eq!(j.recv_content(), (0, s, data.to_vec()));
    }
    m.expect_silence(QUIET);
    j.expect_silence(QUIET);
}

#[test]
fn binding_survives_joiner_becoming_member() {
    // Proves the binding outlives `connected: true`: the exchange with the member goes on.
    let server = TestServer::start();
    let (mut m, mut j, s) = bound_pair(&server, "/room");
    assert!(j.join(2, &[1]), "j now knows the member");
    j.content(0, b"late candidate", false);
    assert_eq!(m.recv_content(), (s, 0, b"late candidate".to_vec()));
    m.content(s, b"late answer", false);
    assert_eq!(j.recv_content(), (0, s, b"late answer".to_vec()));
}

#[test]
fn last_data_ends_joiner_to_member_only() {
    // Proves the joiner's lastData: delivered, later ones not, member -> joiner still works.
    let server = TestServer::start();
    let (mut m, mut j, s) = bound_pair(&server, "/room");
    j.content(0, b"last", true);
    assert_eq!(m.recv_content(), (s, 0, b"last".to_vec()));
    j.content(0, b"after", false);
    m.expect_silence(QUIET);
    m.content(s, b"reply", false);
    assert_eq!(j.recv_content(), (0, s, b"reply".to_vec()));
    m.content(s, b"reply 2", false);
    assert_eq!(j.recv_content(), (0, s, b"reply 2".to_vec()));
}

#[test]
fn last_data_ends_member_to_joiner_only() {
    // Proves the member's lastData: delivered, later ones not, joiner -> member still works.
    let server = TestServer::start();
    let (mut m, mut j, s) = bound_pair(&server, "/room");
    m.content(s, b"last", true);
    assert_eq!(j.recv_content(), (0, s, b"last".to_vec()));
    m.content(s, b"after", false);
    j.expect_silence(QUIET);
    j.content(0, b"still", false);
    assert_eq!(m.recv_content(), (s, 0, b"still".to_vec()));
    j.content(0, b"still 2", false);
    assert_eq!(m.recv_content(), (s, 0, b"still 2".to_vec()));
}

#[test]
fn joiner_cycles_through_members_in_join_order_favored_first() {
    // Proves the choice of M: favored first, then join order, skipping tried ones, then cycling.
    let server = TestServer::start();
    let mut members = [
        server.peer("/room"),
        server.peer("/room?favored"),
        server.peer("/room"),
    ];
    assert!(members[0].join(1, &[]));
    assert!(members[1].join(2, &[1]));
    assert!(members[2].join(3, &[1]));
    let mut j = server.peer("/room");
    // m2 (favored), then m1 and m3 in join order; all tried: start again.
    let expected = [1, 0, 2, 1, 0, 2, 1];
    let mut ids = Vec::new();
    for (round, &m) in expected.iter().enumerate() {
        assert!(!j.join(10, &[]), "round {round}");
        let label = format!("round {round}");
        j.content(0, label.as_bytes(), false);
        let (s, r, data) = members[m].recv_content();
        assert_eq!((r, data), (0, label.into_bytes()), "round {round}");
        members[m].content(s, b"ack", false);
        assert_eq!(j.recv_content(), (0, s, b"ack".to_vec()));
        ids.push(s);
    }
    for m in &mut members {
        m.expect_silence(QUIET);
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids.len(),
        expected.len(),
        "each bind draws a fresh signaling id"
    );
}

#[test]
fn joiner_prefers_each_favored_member_before_others() {
    // Proves that every favored member, in join order, comes before any non-favored one.
    let server = TestServer::start();
    let mut members = [
        server.peer("/room"),
        server.peer("/room?favored"),
        server.peer("/room?favored="),
    ];
    assert!(members[0].join(1, &[]));
    assert!(members[1].join(2, &[1]));
    assert!(members[2].join(3, &[1]));
    let mut j = server.peer("/room");
    for (round, &m) in [1, 2, 0, 1].iter().enumerate() {
        assert!(!j.join(10, &[]), "round {round}");
        let label = format!("round {round}");
        j.content(0, label.as_bytes(), false);
        let (_, _, data) = members[m].recv_content();
        assert_eq!(data, label.into_bytes(), "round {round}");
    }
    for m in &mut members {
        m.expect_silence(QUIET);
    }
}

#[test]
fn two_joiners_through_one_member_are_routed_by_recipient_id() {
    // Proves that a member's content reaches only the joiner whose signaling id it names.
    let server = TestServer::start();
    let (mut m, mut j1) = member_and_joiner(&server, "/room");
    let mut j2 = server.peer("/room");
    assert!(!j2.join(3, &[]));
    let s1 = signaling_id(&mut j1, &mut m);
    let s2 = signaling_id(&mut j2, &mut m);
    assert_ne!(s1, s2, "live peers have distinct signaling ids");
    m.content(s2, b"to j2", false);
    m.content(s1, b"to j1", false);
    m.content(0, b"to nobody", false);
    m.content(s1 ^ s2 ^ 1, b"to nobody either", false);
    assert_eq!(j1.recv_content(), (0, s1, b"to j1".to_vec()));
    assert_eq!(j2.recv_content(), (0, s2, b"to j2".to_vec()));
    j1.expect_silence(QUIET);
    j2.expect_silence(QUIET);
}

#[test]
fn member_cannot_reach_a_joiner_bound_to_another_member() {
    // Proves member -> joiner routing needs the binding: another member naming S reaches nobody.
    let server = TestServer::start();
    let mut m1 = server.peer("/room");
    assert!(m1.join(1, &[]));
    let mut m2 = server.peer("/room");
    assert!(m2.join(2, &[1]));
    let mut j = server.peer("/room");
    assert!(!j.join(3, &[]));
    let s = signaling_id(&mut j, &mut m1);
    m2.content(s, b"not your joiner", false);
    j.expect_silence(QUIET);
    m1.content(s, b"your member", false);
    assert_eq!(j.recv_content(), (0, s, b"your member".to_vec()));
}

#[test]
fn rebinding_is_silent_to_the_old_member() {
    // Proves a new bind drops the old one silently: the old member hears nothing, old S is dead.
    let server = TestServer::start();
    let mut m1 = server.peer("/room");
    assert!(m1.join(1, &[]));
    let mut m2 = server.peer("/room");
    assert!(m2.join(2, &[1]));
    let mut j = server.peer("/room");
    assert!(!j.join(3, &[]));
    let s1 = signaling_id(&mut j, &mut m1);
    assert!(!j.join(3, &[]), "rebound to m2");
    m1.expect_silence(QUIET);
    let s2 = signaling_id(&mut j, &mut m2);
    m1.content(s1, b"stale", false);
    j.expect_silence(QUIET);
    m2.content(s2, b"fresh", false);
    assert_eq!(j.recv_content(), (0, s2, b"fresh".to_vec()));
    m1.close();
    j.expect_silence(QUIET);
    m2.content(s2, b"still bound", false);
    assert_eq!(j.recv_content(), (0, s2, b"still bound".to_vec()));
    j.close();
    assert_eq!(m2.recv_content(), (s2, 0, vec![]));
}

#[test]
fn signaling_ids_are_nonzero_below_2_31_and_fresh_per_bind() {
    // Proves every bind draws a new signaling id in 1..2^31-1, used in both directions.
    let server = TestServer::start();
    let mut members = [server.peer("/room"), server.peer("/room")];
    assert!(members[0].join(1, &[]));
    assert!(members[1].join(2, &[1]));
    let mut j = server.peer("/room");
    let mut ids = Vec::new();
    for round in 0..8 {
        assert!(!j.join(3, &[]));
        let m = &mut members[round % 2];
        let s = signaling_id(&mut j, m);
        assert!(s != 0 && s < 1 << 31, "signaling id {s} out of range");
        m.content(s, b"back", false);
        assert_eq!(j.recv_content(), (0, s, b"back".to_vec()));
        ids.push(s);
    }
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(
        unique.len(),
        ids.len(),
        "a signaling id was reused: {ids:?}"
    );
}

#[test]
fn a_peer_can_be_member_and_joiner_at_once() {
    // Proves the two roles are independent: a demoted member keeps serving its own joiner.
    let server = TestServer::start();
    let mut a = server.peer("/room");
    assert!(a.join(1, &[]));
    let mut b = server.peer("/room?favored");
    assert!(b.join(2, &[1]));
    let mut c = server.peer("/room");
    assert!(!c.join(3, &[]), "bound to b, the favored member");
    let sc = signaling_id(&mut c, &mut b);
    assert!(!b.join(2, &[]), "b leaves the group and is bound to a");
    let sb = signaling_id(&mut b, &mut a);
    c.expect_silence(QUIET);
    a.content(sb, b"a to b", false);
    assert_eq!(b.recv_content(), (0, sb, b"a to b".to_vec()));
    c.content(0, b"c to b", false);
    assert_eq!(b.recv_content(), (sc, 0, b"c to b".to_vec()));
    // As c's member, b's content for sc reaches c; as a's joiner, any content of b reaches a.
    b.content(sc, b"b to c", false);
    assert_eq!(c.recv_content(), (0, sc, b"b to c".to_vec()));
    assert_eq!(a.recv_content(), (sb, 0, b"b to c".to_vec()));
    a.expect_silence(QUIET);
    c.expect_silence(QUIET);
}

#[test]
fn hundred_groups_stay_isolated() {
    // Proves keys are separate groups: 100 member+joiner pairs each relay only within the pair.
    const N: usize = 100;
    let server = TestServer::start();
    let mut pairs: Vec<(Peer, Peer)> = (0..N)
        .map(|i| {
            let path = format!("/group-{i}");
            member_and_joiner(&server, &path)
        })
        .collect();
    for (i, (_, j)) in pairs.iter_mut().enumerate() {
        j.content(0, format!("up {i}").as_bytes(), false);
    }
    let ids: Vec<u32> = pairs
        .iter_mut()
        .enumerate()
        .map(|(i, (m, _))| {
            let (s, r, data) = m.recv_content();
            assert_eq!((r, data), (0, format!("up {i}").into_bytes()));
            s
        })
        .collect();
    for (i, (m, _)) in pairs.iter_mut().enumerate() {
        m.content(ids[i], format!("down {i}").as_bytes(), false);
    }
    for (i, (_, j)) in pairs.iter_mut().enumerate() {
        assert_eq!(
            j.recv_content(),
            (0, ids[i], format!("down {i}").into_bytes())
        );
    }
    // Every stray copy of the rounds above would have been queued before these fences.
    for (i, (m, j)) in pairs.iter_mut().enumerate() {
        j.content(0, b"fence", false);
        m.content(ids[i], b"fence", false);
    }
    for (i, (m, j)) in pairs.iter_mut().enumerate() {
        assert_eq!(
            m.recv_content(),
            (ids[i], 0, b"fence".to_vec()),
            "group {i}"
        );
        assert_eq!(
            j.recv_content(),
            (0, ids[i], b"fence".to_vec()),
            "group {i}"
        );
    }
}

#[test]
fn one_mib_content_relays_intact_both_ways() {
    // Proves a 1 MiB payload crosses the relay unchanged in both directions.
    let server = TestServer::start();
    let (mut m, mut j, s) = bound_pair(&server, "/room");
    let up: Vec<u8> = (0..1usize << 20)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 9)) as u8)
        .collect();
    let down: Vec<u8> = up.iter().rev().map(|b| b ^ 0x5a).collect();
    j.content(0, &up, false);
    let (sender, recipient, data) = m.recv_content();
    assert_eq!((sender, recipient), (s, 0));
    assert!(
        data == up,
        "joiner -> member payload altered ({} bytes)",
        data.len()
    );
    m.content(s, &down, false);
    let (sender, recipient, data) = j.recv_content();
    assert_eq!((sender, recipient), (0, s));
    assert!(
        data == down,
        "member -> joiner payload altered ({} bytes)",
        data.len()
    );
}

#[test]
fn connected_answers_have_exact_bytes() {
    // Proves the answers on the wire: `connected: true` is 20 01 and `connected: false` is 20 00.
    let server = TestServer::start();
    let mut a = server.peer("/room");
    a.connect_group(1, &[]);
    assert_eq!(a.recv_raw(), [0x20, 0x01]);
    let mut b = server.peer("/room");
    b.connect_group(2, &[]);
    assert_eq!(b.recv_raw(), [0x20, 0x00]);
    b.connect_group(2, &[1]);
    assert_eq!(b.recv_raw(), [0x20, 0x01]);
}

#[test]
fn relayed_contents_omit_default_fields() {
    // Proves relayed and final contents carry only their nonzero ids and non-empty data.
    let server = TestServer::start();
    let (mut m, mut j, s) = bound_pair(&server, "/room");
    let s64 = u64::from(s);
    j.content(5, b"hi", true);
    assert_eq!(
        content_fields(&m.recv_raw()),
        [(1, Field::Varint(s64)), (4, Field::Bytes(b"hi".to_vec()))],
        "joiner -> member: senderId and data only, no lastData"
    );
    m.content(s, b"yo", false);
    assert_eq!(
        content_fields(&j.recv_raw()),
        [(2, Field::Varint(s64)), (4, Field::Bytes(b"yo".to_vec()))],
        "member -> joiner: recipientId and data only"
    );
    m.content(s, b"", false);
    assert_eq!(content_fields(&j.recv_raw()), [(2, Field::Varint(s64))]);
    m.close();
    assert_eq!(
        content_fields(&j.recv_raw()),
        [(2, Field::Varint(s64))],
        "member gone: recipientId only"
    );
}

// ---------------------------------------------------------------------------------------------
// §6 disconnects

#[test]
fn member_gone_gives_joiner_empty_content() {
    // Proves a member's close ends its binding with {senderId 0, recipientId S, no data}.
    let server = TestServer::start();
    let (m, mut j, s) = bound_pair(&server, "/room");
    m.close();
    assert_eq!(j.recv_content(), (0, s, vec![]));
    j.expect_silence(QUIET);
}

#[test]
fn member_dropping_tcp_gives_joiner_empty_content() {
    // Proves the same final content when the member's TCP connection drops with no close frame.
    let server = TestServer::start();
    let (m, mut j, s) = bound_pair(&server, "/room");
    drop(m);
    assert_eq!(j.recv_content(), (0, s, vec![]));
}

#[test]
fn joiner_gone_gives_member_empty_content() {
    // Proves a joiner's close ends its binding with {senderId S, recipientId 0, no data}.
    let server = TestServer::start();
    let (mut m, j, s) = bound_pair(&server, "/room");
    j.close();
    assert_eq!(m.recv_content(), (s, 0, vec![]));
    m.expect_silence(QUIET);
}

#[test]
fn joiner_dropping_tcp_gives_member_empty_content() {
    // Proves the same final content when the joiner's TCP connection drops with no close frame.
    let server = TestServer::start();
    let (mut m, j, s) = bound_pair(&server, "/room");
    drop(j);
    assert_eq!(m.recv_content(), (s, 0, vec![]));
}

#[test]
fn member_gone_notifies_each_of_its_joiners() {
    // Proves every joiner bound to a leaving member gets its own final content.
    let server = TestServer::start();
    let (mut m, mut j1) = member_and_joiner(&server, "/room");
    let mut j2 = server.peer("/room");
    assert!(!j2.join(3, &[]));
    let s1 = signaling_id(&mut j1, &mut m);
    let s2 = signaling_id(&mut j2, &mut m);
    m.close();
    assert_eq!(j1.recv_content(), (0, s1, vec![]));
    assert_eq!(j2.recv_content(), (0, s2, vec![]));
}

#[test]
fn replaced_blocking_member_notifies_its_joiners() {
    // Proves the 4744 close of rule 2c is a disconnect like any other for the joiners bound to it.
    let server = TestServer::start();
    let (mut a, mut b) = member_and_joiner(&server, "/room");
    let mut c = server.peer("/room");
    assert!(!c.join(3, &[]));
    let sb = signaling_id(&mut b, &mut a);
    let sc = signaling_id(&mut c, &mut a);
    assert!(b.join(2, &[]), "b replaces the blocking a");
    assert_eq!(a.expect_close().code, 4744);
    assert_eq!(b.recv_content(), (0, sb, vec![]));
    assert_eq!(c.recv_content(), (0, sc, vec![]));
}

#[test]
fn directions_ended_by_last_data_send_nothing_on_disconnect() {
    // Proves only live directions get the final content: lastData ended ones stay silent.
    let server = TestServer::start();

    // The joiner ended its direction, then leaves: the member hears nothing more.
    let (mut m1, mut j1, s1) = bound_pair(&server, "/one");
    j1.content(0, b"bye", true);
    assert_eq!(m1.recv_content(), (s1, 0, b"bye".to_vec()));
    j1.close();
    m1.expect_silence(QUIET);

    // The member ended its direction, then leaves: the joiner hears nothing more.
    let (mut m2, mut j2, s2) = bound_pair(&server, "/two");
    m2.content(s2, b"bye", true);
    assert_eq!(j2.recv_content(), (0, s2, b"bye".to_vec()));
    m2.close();
    j2.expect_silence(QUIET);

    // The joiner ended its own direction; the member's is still live, so its leaving is told.
    let (mut m3, mut j3, s3) = bound_pair(&server, "/three");
    j3.content(0, b"bye", true);
    assert_eq!(m3.recv_content(), (s3, 0, b"bye".to_vec()));
    m3.close();
    assert_eq!(j3.recv_content(), (0, s3, vec![]));
}

#[test]
fn group_is_deleted_when_its_last_member_leaves() {
    // Proves members leave their group on disconnect, and the key is free once none is left.
    let server = TestServer::start();
    let mut a = server.peer("/room");
    assert!(a.join(1, &[]));
    let mut b = server.peer("/room");
    assert!(b.join(2, &[1]));
    a.close();
    let mut c = server.peer("/room");
    assert!(!c.join(3, &[1]), "a left: b is alone and c is bound to it");
    let sc = signaling_id(&mut c, &mut b);
    c.close();
    assert_eq!(b.recv_content(), (sc, 0, vec![]));
    b.close();
    let mut d = server.peer("/room");
    assert!(d.join(4, &[]), "the key is free: d founds a new group");
    let mut e = server.peer("/room");
    assert!(!e.join(5, &[2]), "the new group has only d");
}

#[test]
fn joiner_leaving_keeps_the_group() {
    // Proves a non-member's disconnect does not touch the group of its key.
    let server = TestServer::start();
    let (mut m, j, s) = bound_pair(&server, "/room");
    j.close();
    assert_eq!(m.recv_content(), (s, 0, vec![]));
    let mut k = server.peer("/room");
    assert!(!k.join(3, &[]), "m still holds the group");
    signaling_id(&mut k, &mut m);
}
